"""The INT8 gate: top-1 agreement with fp32 on every image calibration did not see, with its uncertainty.

Agreement with fp32 needs no labels, so the gate is not limited to a run's
test split: every image of the run (train, val, test) and of ``--calib`` that
did not calibrate the activation ranges counts, which is what gives a small run
a measurement rather than a "zero flips" check. The figure comes with a 95 %
Wilson score interval for a binomial proportion (Wilson, 1927): unlike the
normal approximation it stays inside [0, 1] and keeps its coverage at
proportions near 1 and at small counts, exactly where an INT8 gate lives
(57 of 57 images agreeing gives [93.7 %, 100 %], not [100 %, 100 %]).

The gate passes when the measured agreement reaches the target; the interval
is reported, and recorded in the model's metadata, so a reader can see how
many images that verdict rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: the two-sided 95 % normal quantile: the interval's coverage
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials``; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Agreement:
    """How many of the gate's images an INT8 model answers as fp32 does (the worse of the fp32 references)."""

    agreeing: int
    images: int
    min_agreement: float

    @property
    def agreement(self) -> float:
        return self.agreeing / self.images if self.images else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.agreeing, self.images)

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def describe(self) -> str:
        low, high = self.interval
        return (f"{100 * self.agreement:.2f} % (95 % CI {100 * low:.1f}–{100 * high:.1f} %) of {self.images} images "
                f"calibration did not see")

    def to_dict(self) -> dict[str, object]:
        low, high = self.interval
        return {"agreeing": self.agreeing, "images": self.images, "agreement": self.agreement,
                "interval": [low, high], "confidence": 0.95, "interval_method": "Wilson score",
                "min_agreement": self.min_agreement, "passed": self.passed}


@dataclass
class AgreementGate:
    """The gate's frames, the fp32 answers on them and the target; ``judge`` scores a model's probabilities."""

    frames: np.ndarray
    #: fp32 probabilities the INT8 model must agree with (the exporter's fused module and unfused pipeline)
    references: tuple[np.ndarray, ...]
    min_agreement: float

    def judge(self, probs: np.ndarray) -> Agreement:
        decisions = probs.argmax(1)
        agreeing = min(int((decisions == reference.argmax(1)).sum()) for reference in self.references)
        return Agreement(agreeing, len(probs), self.min_agreement)
