"""What a user chooses for ``clipedge export --int8``, kept import-light: the CLI reads its defaults at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipedge.core.errors import ClipedgeError

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_COUNT = 128
DEFAULT_MIN_AGREEMENT = 0.98
#: the measured fallback returns at most this share of the INT8 layers to float before the export gives up: past
#: it, most of INT8's speed is gone and fp16 (or fp32) is the honest export
MAX_FLOAT_FRACTION = 0.25


@dataclass(frozen=True)
class Int8Options:
    """Where calibration images come from, which calibration method, and how strict the gate is."""

    calib_dir: Path | None = None
    count: int = DEFAULT_COUNT
    #: one of METHODS, or "auto": try each and keep the one that agrees best with fp32
    method: str = "auto"
    #: top-1 agreement with fp32 required on every image calibration did not see (clipedge.calibration.int8_gate)
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    seed: int = 0

    def validate(self) -> None:
        if self.method != "auto" and self.method not in METHODS:
            raise ClipedgeError(f"--calib-method {self.method}: expected auto or one of {', '.join(METHODS)}")
        if self.count < 1:
            raise ClipedgeError(f"--calib-count {self.count}: expected at least 1 image")
        if not 0 <= self.min_agreement <= 1:
            raise ClipedgeError(f"--min-agreement {self.min_agreement}: expected a fraction between 0 and 1, e.g. 0.98")
