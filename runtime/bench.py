"""Latency and throughput of a callable on uint8 frames: p50/p90/p99 and images per second."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class Measurement:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    iterations: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure(run_batch: Callable[[np.ndarray], object], frames: np.ndarray, iterations: int, warmup: int) -> Measurement:
    """Time ``run_batch(frames)`` end to end (host uint8 in, host probabilities out)."""
    for _ in range(warmup):
        run_batch(frames)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run_batch(frames)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Measurement(len(frames), float(p50), float(p90), float(p99), float(len(frames) / np.median(times)), iterations)


def random_frames(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
