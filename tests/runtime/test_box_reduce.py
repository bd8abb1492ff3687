"""The fast path's numpy box reduction (runtime/box_reduce.py) against Pillow's own ``Image.reduce``, and the fast
resize of arrays against the same resize of PIL images, on random pixels and scikit-image's photographs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.preprocessing.box_reduce import box_reduce
from clipedge.runtime.preprocessing.transform import fast_resize_and_crop, resize_and_crop

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs")


def pillow_reduce(pixels: np.ndarray, factor_x: int, factor_y: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).reduce((factor_x, factor_y)))


@pytest.mark.parametrize("factors", [(2, 2), (3, 3), (4, 4), (5, 5), (8, 8), (1, 6), (7, 1), (3, 8), (16, 16), (17, 19)])
def test_equals_pillow_reduce_value_for_value(factors):
    """Every factor kind Pillow special-cases (2-5 square, 1xN, Nx1, general, sums beyond uint16), sizes that leave
    partial blocks on both edges, grey and RGB."""
    rng = np.random.default_rng(sum(factors))
    for height, width in ((61, 45), (factors[1] * 4, factors[0] * 3), (5, 3)):
        for shape in ((height, width), (height, width, 3)):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            reduced = np.asarray(box_reduce(pixels, *factors))
            assert reduced.shape == pillow_reduce(pixels, *factors).shape
            assert np.array_equal(reduced, pillow_reduce(pixels, *factors)), (shape, factors)
    white = np.full((40, 40, 3), 255, np.uint8)  # the largest sums round back to 255, not past it
    assert (np.asarray(box_reduce(white, *factors)) == 255).all()


def test_reads_any_strides():
    """Views of a camera frame: a crop (rows apart in memory), RGB of RGBA, reversed channels (BGR → RGB)."""
    frame = np.ascontiguousarray(skimage_data.astronaut())
    rgba = np.concatenate([frame, np.full(frame.shape[:2] + (1,), 7, np.uint8)], axis=2)
    for view in (frame[37:301, 55:480], rgba[..., :3], frame[..., ::-1], frame[::-1]):
        assert np.array_equal(np.asarray(box_reduce(view, 8, 6)), pillow_reduce(view, 8, 6))


def test_fast_resize_of_an_array_equals_the_same_resize_of_a_pil_image():
    """The numpy route (reduce in numpy, then Pillow's antialiased resample) gives the very pixels Pillow's
    ``resize(..., reducing_gap)`` gives on the same frame as a PIL image: every resize mode and antialiasing filter
    (nearest never reduces), landscape and portrait, odd sizes, grey. Frames too small to reduce are cut to the
    surviving region and handed to Pillow whole, which moves its filter positions by float rounding: one grey
    level at most."""
    camera = skimage_data.coffee()
    for width, height, size in ((1920, 1080, 64), (1920, 1080, 224), (333, 1001, 64), (97, 61, 32), (130, 90, 64)):
        rgb = np.asarray(Image.fromarray(camera).resize((width, height), Image.Resampling.BICUBIC))
        reduces = min(width, height) >= 4 * size
        for pixels in (rgb, rgb[..., 1].copy()):
            for mode in ("shortest", "squash", "longest"):
                for interpolation in ("bicubic", "bilinear", "lanczos"):
                    from_array = np.asarray(fast_resize_and_crop(pixels, size, interpolation, mode)).astype(int)
                    from_image = np.asarray(fast_resize_and_crop(Image.fromarray(pixels), size, interpolation, mode))
                    case = (width, height, size, pixels.ndim, mode, interpolation)
                    assert np.abs(from_array - from_image).max() <= (0 if reduces else 1), case


def test_fast_resize_stays_within_eight_grey_levels_of_the_exact_transform():
    """The deviation BENCHMARKS.md reports: 1080p camera frames of photographs, 64 and 224 px."""
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        frame = np.asarray(Image.fromarray(getattr(skimage_data, name)()).resize((1920, 1080), Image.Resampling.BICUBIC))
        for size in (64, 224):
            exact = np.asarray(resize_and_crop(Image.fromarray(frame), size)).astype(int)
            assert np.abs(np.asarray(fast_resize_and_crop(frame, size)) - exact).max() <= 8, (name, size)
