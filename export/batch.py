"""``--batch`` and ``--fixed-batch``: which batch sizes an exported model accepts.

One spec serves both artifacts: an engine's optimisation profile needs
MIN,OPT,MAX; a fixed-batch ONNX needs one N. ``--batch 8`` means the profile
8,8,8 and, with ``--fixed-batch``, an ONNX input of shape [8, H, W, 3].
"""

from __future__ import annotations

from dataclasses import dataclass

from clipedge.errors import ClipedgeError

DEFAULT_BATCH = "1,8,32"
DEFAULT_FIXED_BATCH = "1"


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min},{self.opt},{self.max}"


def parse_batch(text: str | int, option: str = "--batch") -> BatchProfile:
    """``N`` (all three equal) or ``MIN,OPT,MAX`` with 1 ≤ MIN ≤ OPT ≤ MAX."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ClipedgeError(f"{option} {text}: expected N or MIN,OPT,MAX as whole numbers, e.g. 1,8,32") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ClipedgeError(f"{option} {text}: expected N or MIN,OPT,MAX (three numbers), got {len(values)}")
    low, opt, high = values
    if low < 1:
        raise ClipedgeError(f"{option} {text}: batch sizes must be at least 1")
    if not low <= opt <= high:
        raise ClipedgeError(f"{option} {text}: expected MIN <= OPT <= MAX")
    return BatchProfile(low, opt, high)


def resolve_batch(batch: str | int | None, fixed: bool) -> tuple[BatchProfile, int | None]:
    """The engine profile, and the one batch size the ONNX input is fixed to (None: dynamic)."""
    if not fixed:
        return parse_batch(DEFAULT_BATCH if batch is None else batch), None
    profile = parse_batch(DEFAULT_FIXED_BATCH if batch is None else batch)
    if profile.min != profile.max:
        raise ClipedgeError(f"--fixed-batch: expected one batch size, --batch N (got --batch {batch})")
    return profile, profile.min
