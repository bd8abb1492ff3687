"""The rejection score: how confident a prediction is, for the calibrated "unknown" threshold."""

from __future__ import annotations

import numpy as np

from clipedge.core.errors import ClipedgeError

REJECTION_SCORES = ("max_prob", "energy")


def confidence(logits: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """The score the calibrated rejection threshold applies to, higher = more confident: the maximum softmax
    probability of ``logits / T``, or the negative energy ``T·logsumexp(logits / T)`` (Liu et al., 2020).
    Computed in float64 so a threshold set in training matches the runtime's decision bit for bit in practice."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1)
    log_sum = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    if kind == "max_prob":
        return np.exp(top - log_sum)
    if kind == "energy":
        return temperature * log_sum
    raise ClipedgeError(f"rejection score {kind!r}: expected one of {', '.join(REJECTION_SCORES)}")
