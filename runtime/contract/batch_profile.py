"""The batch sizes a model accepts, and how a batch of any size is split and padded to fit them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipedge.core.errors import ClipedgeError

from .names import BATCH_PROFILE_KEY, DEFAULT_BATCH_PROFILE


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes a model accepts: an engine's optimisation profile MIN ≤ OPT ≤ MAX."""

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


def recorded_batch_profile(metadata: dict[str, str]) -> BatchProfile:
    """The batch range a model was exported for: N,N,N for a fixed batch, else its recorded ``batch_profile``
    (exports before it was recorded: the default profile)."""
    batch = json.loads(metadata.get("input", "{}")).get("shape", [None])[0]
    if isinstance(batch, int):
        return BatchProfile(batch, batch, batch)
    return parse_batch(metadata.get(BATCH_PROFILE_KEY, DEFAULT_BATCH_PROFILE), BATCH_PROFILE_KEY)


def run_in_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], frames: np.ndarray, max_batch: int | None,
                   min_batch: int = 1) -> dict[str, np.ndarray]:
    """``run`` over all frames in chunks a model accepts: split above ``max_batch``, pad a short chunk up to
    ``min_batch`` with copies of its last frame (a fixed-batch model or an engine profile's minimum), then
    drop the padding's outputs."""
    step = max_batch or len(frames)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(frames), step):
        chunk = frames[start : start + step]
        count = len(chunk)
        if count < min_batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], min_batch - count, axis=0)])
        parts.append({name: value[:count] for name, value in run(np.ascontiguousarray(chunk)).items()})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
