"""``--batch`` and ``--fixed-batch``: which batch sizes an exported model accepts.

One spec serves both artifacts: an engine's optimisation profile needs
MIN,OPT,MAX; a fixed-batch ONNX needs one N. ``--batch 8`` means the profile
8,8,8 and, with ``--fixed-batch``, an ONNX input of shape [8, H, W, 3].
"""

from __future__ import annotations

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.contract import DEFAULT_BATCH_PROFILE, BatchProfile, parse_batch

DEFAULT_FIXED_BATCH = "1"


def resolve_batch(batch: str | int | None, fixed: bool) -> tuple[BatchProfile, int | None]:
    """The engine profile, and the one batch size the ONNX input is fixed to (None: dynamic)."""
    if not fixed:
        return parse_batch(DEFAULT_BATCH_PROFILE if batch is None else batch), None
    profile = parse_batch(DEFAULT_FIXED_BATCH if batch is None else batch)
    if profile.min != profile.max:
        raise ClipedgeError(f"--fixed-batch: expected one batch size, --batch N (got --batch {batch})")
    return profile, profile.min
