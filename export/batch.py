"""``--batch MIN,OPT,MAX``: the batch sizes an engine's optimisation profile covers."""

from __future__ import annotations

from dataclasses import dataclass

from clipedge.errors import ClipedgeError

DEFAULT_BATCH = "1,8,32"


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min},{self.opt},{self.max}"


def parse_batch(text: str, option: str = "--batch") -> BatchProfile:
    """``N`` (fixed) or ``MIN,OPT,MAX`` with 1 ≤ MIN ≤ OPT ≤ MAX."""
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
