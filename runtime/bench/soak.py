"""A soak run: one Classifier on a long stream of mixed camera frames, watching memory and answers over time.

A camera pipeline calls the runtime millions of times; a leak of a few bytes a
frame, or a cache that drifts, only shows after hours. The soak feeds the same
cycle of frames in every size and colour layout the runtime accepts (gray,
single-channel, RGB, RGBA arrays; PIL images in L, P, RGB, RGBA; frames at the
model's size, larger and smaller) for ``count`` frames and reports:

* resident memory (RSS, from ``/proc/self/statm``) after a warm-up and at the end, and its largest rise;
* how many calls' probabilities differ, bit for bit, from the same frames' call in the first cycle
  (zero: the answers at the end are those at the start).

``benchmarks/soak.py`` runs it at 100,000 frames; the test suite runs a few thousand.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.classifier import Classifier

#: (height, width) of the array frames in a cycle, besides the model's own size: larger, smaller, portrait, tiny
FRAME_SIZES = ((96, 128), (48, 64), (100, 75), (17, 33))


def mixed_frames(size: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = FRAME_SIZES) -> list[Any]:
    """One cycle of inputs in every layout a Classifier accepts, with random content so answers vary."""
    rng = np.random.default_rng(seed)

    def pixels(height: int, width: int, channels: int) -> np.ndarray:
        base = rng.integers(0, 256, (1, 1, channels))  # a dominant colour, plus noise
        return np.clip(base + rng.normal(0, 40, (height, width, channels)), 0, 255).astype(np.uint8)

    frames: list[Any] = [pixels(size, size, 3)]  # already at model size: the no-resize path
    for height, width in sizes:
        frames += [pixels(height, width, 3), pixels(height, width, 4), pixels(height, width, 1)[..., 0],
                   pixels(height, width, 1)]
    for mode in ("L", "P", "RGB", "RGBA"):
        frames.append(Image.fromarray(pixels(*sizes[0], 3)).convert(mode))
    return frames


def resident_bytes() -> int:
    """This process's resident set size now (Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        raise ClipedgeError("soak: resident memory is read from /proc/self/statm, which this system lacks") from None


@dataclass(frozen=True)
class SoakReport:
    frames: int
    batch: int
    seconds: float
    rss_after_warmup_mb: float
    rss_end_mb: float
    rss_max_growth_mb: float
    #: calls whose probabilities differ (bit for bit) from the same frames' call in the first cycle
    differing_calls: int

    @property
    def rss_growth_mb(self) -> float:
        return round(self.rss_end_mb - self.rss_after_warmup_mb, 2)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth_mb": self.rss_growth_mb}


def soak(classifier: Classifier, count: int, batch: int = 1, frames: list[Any] | None = None, warmup: int = 500,
         samples: int = 200, progress: Any = None) -> SoakReport:
    """Feed ``count`` frames, ``batch`` per call, cycling through ``frames`` (default :func:`mixed_frames`).

    The calls repeat with a period of ``len(frames) / gcd(len(frames), batch)``; each call's probabilities are
    compared with the first period's call of the same phase, so the end is checked against the start and
    everything between. RSS is read after ``warmup`` frames and ``samples`` times over the rest; ``progress``
    (a tqdm bar) is advanced per call when given.
    """
    frames = frames or mixed_frames(classifier.image_size)
    period = len(frames) // math.gcd(len(frames), batch)
    calls = count // batch
    warmup_calls = max(period, warmup // batch)
    if batch < 1 or calls <= warmup_calls:
        raise ClipedgeError(f"soak: {count} frames in batches of {batch} leave nothing after a {warmup}-frame warm-up")
    every = max(1, (calls - warmup_calls) // samples)
    first_cycle: list[np.ndarray] = []
    differing, baseline, peak = 0, 0, 0
    began = time.perf_counter()
    for call in range(calls):
        picked = [frames[(call * batch + j) % len(frames)] for j in range(batch)]
        probs = np.array([p.scores for p in classifier.predict(picked, top_k=len(classifier.labels))])
        if call < period:
            first_cycle.append(probs)
        else:
            differing += not np.array_equal(probs, first_cycle[call % period])
        if call + 1 == warmup_calls:
            baseline = peak = resident_bytes()
        elif call >= warmup_calls and (call - warmup_calls) % every == 0:
            peak = max(peak, resident_bytes())
        if progress is not None:
            progress.update(batch)
    seconds = time.perf_counter() - began
    end = resident_bytes()
    mb = 1 / 2**20
    return SoakReport(frames=calls * batch, batch=batch, seconds=round(seconds, 2),
                      rss_after_warmup_mb=round(baseline * mb, 2), rss_end_mb=round(end * mb, 2),
                      rss_max_growth_mb=round((max(peak, end) - baseline) * mb, 2), differing_calls=int(differing))
