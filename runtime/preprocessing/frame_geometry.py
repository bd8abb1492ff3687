"""Where each output pixel of open_clip's eval transform comes from: resize sizes and crop offsets, per axis.

One piece of arithmetic serves three consumers that must agree to the pixel:
the PIL path (``preprocess.resize_and_crop``), the fast CPU path (which crops
to the surviving region before resampling) and the in-graph front end of a
``--frame`` export (``clipedge.export.frame_input``), which turns it into
constant matrices. The rules are torchvision's and open_clip's:

- ``shortest``: ``Resize(size)`` scales the short side to ``size`` and
  truncates the long side (``int(size * long / short)``), then
  ``CenterCrop(size)`` starts at ``int(round((resized - size) / 2))``;
- ``squash``: both sides resized to ``size``;
- ``longest``: open_clip's ``ResizeKeepRatio`` rounds both sides, then pads
  with black centred at ``(size - resized) // 2`` where a side falls short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.contract import RESIZE_MODES

#: how far each resampling filter reaches, in output pixels (Pillow's ``src/libImaging/Resample.c``)
FILTER_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0, "nearest": 0.5, "lanczos": 3.0}


@dataclass(frozen=True)
class AxisPlan:
    """One axis: the input length, its resized length, and where output pixel 0 lies in resized coordinates
    (negative where black padding comes first)."""

    source: int
    resized: int
    start: int

    @property
    def needs_resample(self) -> bool:
        return self.resized != self.source


@dataclass(frozen=True)
class FramePlan:
    """Both axes of resizing a ``width`` x ``height`` frame to a ``size`` x ``size`` model input."""

    x: AxisPlan
    y: AxisPlan
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        """(width, height) after the resize, before the crop or pad."""
        return self.x.resized, self.y.resized


def resized_size(width: int, height: int, size: int, resize_mode: str) -> tuple[int, int]:
    """The (width, height) open_clip's eval transform resizes a frame to before cropping or padding."""
    if resize_mode == "squash":
        return size, size
    if resize_mode == "shortest":  # torchvision Resize(int): the long side is truncated, not rounded
        short, long = min(width, height), max(width, height)
        scaled = (size, int(size * long / short))
        return scaled if width <= height else scaled[::-1]
    if resize_mode == "longest":  # open_clip's ResizeKeepRatio(longest=1): both sides rounded
        ratio = max(width, height) / size
        return round(width / ratio), round(height / ratio)
    raise ClipedgeError(f"resize_mode {resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")


def crop_start(resized: int, size: int) -> int:
    """Resized coordinate of output pixel 0: torchvision's centre crop, or open_clip's centred black padding."""
    if resized < size:
        return -((size - resized) // 2)
    return int(round((resized - size) / 2.0))


def plan_frame(width: int, height: int, size: int, resize_mode: str = "shortest") -> FramePlan:
    """The eval transform's geometry for one frame size."""
    new_width, new_height = resized_size(width, height, size, resize_mode)
    return FramePlan(AxisPlan(width, new_width, crop_start(new_width, size)),
                     AxisPlan(height, new_height, crop_start(new_height, size)), size)


@dataclass(frozen=True)
class Reduction:
    """Pillow's ``Image.resize(..., box, reducing_gap)`` split in two: the integer factors of its box reduction, the
    source rectangle that reduction reads (the box plus the filter's reach, ``Image._get_safe_box``), and the box
    left for the final resample in reduced coordinates."""

    factor_x: int
    factor_y: int
    source: tuple[int, int, int, int]
    box: tuple[float, float, float, float]


def plan_reduction(width: int, height: int, box: tuple[float, float, float, float], size: tuple[int, int],
                   interpolation: str, reducing_gap: float) -> Reduction | None:
    """How Pillow resizes ``box`` of a ``width`` x ``height`` image to ``size`` with ``reducing_gap``; None where it
    would not reduce first (a box under twice the gap times the size, or nearest-neighbour sampling)."""
    factor_x = int((box[2] - box[0]) / size[0] / reducing_gap) or 1
    factor_y = int((box[3] - box[1]) / size[1] / reducing_gap) or 1
    if interpolation == "nearest" or (factor_x, factor_y) == (1, 1):
        return None
    support = FILTER_SUPPORT[interpolation] - 0.5
    reach_x = support * (box[2] - box[0]) / size[0]
    reach_y = support * (box[3] - box[1]) / size[1]
    x0, y0 = max(0, int(box[0] - reach_x)), max(0, int(box[1] - reach_y))
    x1, y1 = min(width, math.ceil(box[2] + reach_x)), min(height, math.ceil(box[3] + reach_y))
    reduced_box = ((box[0] - x0) / factor_x, (box[1] - y0) / factor_y, (box[2] - x0) / factor_x, (box[3] - y0) / factor_y)
    return Reduction(factor_x, factor_y, (x0, y0, x1, y1), reduced_box)
