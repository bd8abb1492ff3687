"""Models that are not clipedge exports: class names from the caller, scores from whatever the model outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipedge.core.errors import ClipedgeError


def read_labels(labels: Sequence[str] | str | Path) -> list[str]:
    """Class names the caller gives for a model without clipedge metadata: a list, or a text file with one
    name per line (blank lines ignored), the layout of most published ``labels.txt`` files."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ClipedgeError(f"--labels {path}: cannot read it as a UTF-8 text file ({type(error).__name__})") from None
        source = f"--labels {path}"
    else:
        names, source = [str(name) for name in labels], "labels"
    if not names:
        raise ClipedgeError(f"{source}: no class names (expected one per line)")
    return names


def score_output(names: Sequence[str]) -> str | None:
    """The output that carries class scores: the contract's ``probs`` or ``logits``, else a plain classifier's
    only output (taken as logits); None when a model has several outputs and none of those names."""
    for name in ("probs", "logits"):
        if name in names:
            return name
    return names[0] if len(names) == 1 else None


def class_scores(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` with both ``logits`` and ``probs``, as a clipedge export has them. For a plain classifier,
    probs is the softmax of its one output (or of ``logits``); a probs-only model gets log-probabilities as
    logits, whose softmax is those probabilities again."""
    if "logits" in outputs and "probs" in outputs:
        return outputs
    if "probs" in outputs:
        return {**outputs, "logits": np.log(np.maximum(outputs["probs"], np.finfo(np.float32).tiny))}
    name = score_output(list(outputs))
    if name is None:
        raise ClipedgeError(f"model outputs {', '.join(outputs)}: expected logits/probs or a single [N, C] output")
    logits = np.asarray(outputs[name], dtype=np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {**outputs, "logits": logits, "probs": shifted / shifted.sum(axis=1, keepdims=True)}
