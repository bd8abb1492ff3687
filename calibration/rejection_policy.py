"""When a rejection threshold is worth deploying; kept import-light, as the CLI reads the default at start-up.

A threshold only helps when its score separates known from unknown classes:
with a held-out AUROC near 0.5 it turns frames into "unknown" at random.
``MIN_AUROC`` is 0.6 because of what a threshold buys there. Under the usual
binormal model (both scores normal, equal variance) AUROC = Φ(d/√2); at 0.6,
d ≈ 0.36, and a threshold that rejects 5 % of the known images rejects
Φ(−1.645 + 0.36) ≈ 10 % of the unknown ones: twice the 5 % a coin would
reject, for the same 5 % of correct answers lost. Below 0.6 the trade is
worse than that, so ``clipedge calibrate`` records the score and the
threshold it would have set, applies none, and says why
(``--force-threshold`` applies it anyway). At 0.75 the same threshold rejects
≈ 24 % of unknowns; a stricter deployment can require that with
``--min-auroc``.
"""

from __future__ import annotations

MIN_AUROC = 0.6


def withheld_reason(score: str, held_out_auroc: float, min_auroc: float) -> str | None:
    """Why a threshold on ``score`` is not deployed (None: deploy it), from its AUROC on held-out classes."""
    if held_out_auroc >= min_auroc:
        return None
    return (f"held-out val AUROC {held_out_auroc:.2f} ({score}) is below the minimum {min_auroc:g}, so \"unknown\" "
            "would be little better than chance")
