"""PIL's antialiased resampling as integer matrices: the coefficients torchvision's ``Resize`` uses on PIL images.

Pillow (``src/libImaging/Resample.c``) resizes in two separable passes,
horizontal then vertical, each a weighted sum over the input pixels whose
distance from the output pixel's centre lies within the filter's support,
stretched by the downscale factor (that stretch is the antialiasing). The
weights are normalised to sum to one, then stored as integers with 22
fractional bits (``PRECISION_BITS``), and each output is
``clip((Σ pixel · weight + 2**21) >> 22, 0, 255)``: rounded and clipped to
uint8 after *each* pass, so the intermediate image is uint8 too. Which pass
runs first matters for that rounding: Pillow 13 (``ImagingResampleInner``)
runs the vertical pass first when the height shrinks by more than twice as
many pixels as the width, otherwise horizontal first (:func:`vertical_first`).

:func:`resample_matrix` reproduces ``precompute_coeffs`` and
``normalize_coeffs_8bpc`` exactly (double precision, the same rounding, the
same clamping at the image edges) as a dense ``[out, in]`` integer matrix, and
:func:`resample_rows` applies it the way Pillow does, so tests can hold both
against PIL. The graph front end (``frame_input``) evaluates the same matrices.
"""

from __future__ import annotations

import math

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.preprocessing.frame_geometry import FILTER_SUPPORT

PRECISION_BITS = 32 - 8 - 2


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


#: interpolation name → filter, as Resample.c defines them (their reach: runtime.frame_geometry.FILTER_SUPPORT)
FILTERS = {"bicubic": _bicubic, "bilinear": _bilinear, "lanczos": _lanczos}


def resample_matrix(in_size: int, out_size: int, interpolation: str = "bicubic") -> np.ndarray:
    """int64 ``[out_size, in_size]``: Pillow's fixed-point weights for resizing one axis (no box)."""
    if interpolation not in FILTERS:
        raise ClipedgeError(f"interpolation {interpolation!r}: a --frame export reproduces PIL's "
                            f"{', '.join(FILTERS)} resampling; nearest is not supported")
    filter_fn, filter_support = FILTERS[interpolation], FILTER_SUPPORT[interpolation]
    scale = in_size / out_size  # Pillow: (double)(in1 - in0) / outSize with in0 = 0, in1 = inSize
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    inverse = 1.0 / filterscale
    matrix = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [filter_fn((x + xmin - center + 0.5) * inverse) for x in range(xmax)]
        total = sum(weights)
        if total != 0.0:
            weights = [w / total for w in weights]
        for x, w in enumerate(weights):  # normalize_coeffs_8bpc: round half away from zero, then truncate
            matrix[xx, xmin + x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
    return matrix


def vertical_first(in_width: int, in_height: int, out_width: int, out_height: int) -> bool:
    """Pillow 13's pass order for a full-image resize (sizes before any crop)."""
    shrink_y, shrink_x = in_height - out_height, in_width - out_width
    return shrink_y > 0 and shrink_y > shrink_x * 2


def pil_resize(pixels: np.ndarray, out_width: int, out_height: int, interpolation: str = "bicubic") -> np.ndarray:
    """uint8 [H, W, C] resized exactly as ``PIL.Image.resize((out_width, out_height), filter)`` (tests hold the two
    together); a pass whose axis keeps its size is skipped, as Pillow skips it."""
    height, width = pixels.shape[:2]
    planes = np.moveaxis(pixels, 2, 0)  # [C, H, W]

    def horizontal(x: np.ndarray) -> np.ndarray:
        return resample_rows(x, resample_matrix(width, out_width, interpolation)) if out_width != width else x

    def vertical(x: np.ndarray) -> np.ndarray:
        if out_height == height:
            return x
        return np.swapaxes(resample_rows(np.swapaxes(x, 1, 2), resample_matrix(height, out_height, interpolation)), 1, 2)

    if vertical_first(width, height, out_width, out_height):
        planes = horizontal(vertical(planes))
    else:
        planes = vertical(horizontal(planes))
    return np.ascontiguousarray(np.moveaxis(planes, 0, 2))


def resample_rows(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """One Pillow pass over the last axis of a uint8 array: ``clip((pixels @ matrixᵀ + 2**21) >> 22)``. The sums
    run as float64 BLAS products: every partial sum is an integer below 2**40, exact in a 53-bit mantissa."""
    total = (pixels.astype(np.float64) @ matrix.T.astype(np.float64)).astype(np.int64) + (1 << (PRECISION_BITS - 1))
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.uint8)
