"""Frames to model input in numpy/PIL, reproducing open_clip's eval transform.

An exported model takes uint8 RGB frames at its own resolution; everything
else (decoding, colour order, resizing, cropping) happens here, torch-free.
open_clip's eval transform is, per ``resize_mode``: ``shortest`` (the default)
resizes the shortest side to the model size and centre-crops, ``squash``
resizes to a square ignoring the aspect ratio, ``longest`` resizes the longest
side and pads with black. The exact path resamples with PIL's own
(antialiased) filters, exactly what torchvision does on PIL images, so results
agree with training-time preprocessing to within one grey level (tests check
this on photographs); the fast path (``quality="fast"``) crops first and
box-reduces before resampling, a few grey levels away at a fraction of the
cost. Frames already at model size skip all of it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, SkippedFile, UnreadableImage, load_rgb, to_rgb
from clipedge.runtime.preprocessing.box_reduce import box_reduce
from clipedge.runtime.preprocessing.frame_geometry import (
    FILTER_SUPPORT,
    AxisPlan,
    FramePlan,
    plan_frame,
    plan_reduction,
)

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


RESIZE_QUALITIES = ("fast", "exact")
#: PIL ``reducing_gap`` of the fast path: box-average down to this many times the target size, then resample
FAST_REDUCING_GAP = 2.0


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[interpolation]
    except KeyError:
        raise ClipedgeError(f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}") from None


def resize_and_crop(image: Image.Image, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest") -> Image.Image:
    """open_clip's eval geometry on a PIL image: resize per ``resize_mode``, then centre-crop or pad to size×size."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    resample = _resample(interpolation)
    plan = plan_frame(width, height, size, resize_mode)
    if plan.resized != (width, height):
        image = image.resize(plan.resized, resample)
    if plan.resized == (size, size):
        return image
    # PIL fills what lies outside the image with black: the centred padding of "longest" comes for free
    return image.crop((plan.x.start, plan.y.start, plan.x.start + size, plan.y.start + size))


def _surviving_box(plan: FramePlan) -> tuple[tuple[float, float, float, float], tuple[int, int, int, int]]:
    """The source region (floats, PIL ``box``) whose resampling lands inside the crop, and where that
    region's output goes in resized coordinates (x0, y0, x1, y1)."""
    def axis(a: AxisPlan) -> tuple[float, float, int, int]:
        first, last = max(a.start, 0), min(a.start + plan.size, a.resized)
        scale = a.source / a.resized
        return first * scale, last * scale, first, last

    x0, x1, rx0, rx1 = axis(plan.x)
    y0, y1, ry0, ry1 = axis(plan.y)
    return (x0, y0, x1, y1), (rx0, ry0, rx1, ry1)


def fast_resize_and_crop(image: Image.Image | np.ndarray, size: int, interpolation: str = "bicubic",
                         resize_mode: str = "shortest") -> Image.Image:
    """The eval transform's geometry at a fraction of its cost: only the region that survives the crop is
    resampled (for a 16:9 frame and a centre crop, the central square: 56 % of the pixels), and PIL first
    shrinks it by an integer box average down to ``FAST_REDUCING_GAP`` times the target size before the
    antialiased resample. A grey or RGB numpy frame is box-reduced in numpy straight from that region
    (:mod:`.box_reduce`, Pillow's reduce value for value, each pixel read once) and only the reduced image
    becomes a PIL image; other arrays are cut to the region (plus the filter's reach) first, so the rest is
    never copied. The result differs from the exact path by a few grey levels at most (measured in
    BENCHMARKS.md); ``resize_quality="exact"`` keeps the exact path.
    """
    width, height = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
    resample = _resample(interpolation)
    plan = plan_frame(width, height, size, resize_mode)
    box, (rx0, ry0, rx1, ry1) = _surviving_box(plan)
    out_size = (rx1 - rx0, ry1 - ry0)
    reduction = plan_reduction(width, height, box, out_size, interpolation, FAST_REDUCING_GAP) \
        if isinstance(image, np.ndarray) and _reducible_in_numpy(image) else None
    if reduction is not None:  # box-reduce straight from the array: the full-size region never becomes a PIL image
        x0, y0, x1, y1 = reduction.source
        resized = box_reduce(image[y0:y1, x0:x1], reduction.factor_x, reduction.factor_y)
        resized = resized.resize(out_size, resample, box=reduction.box)
    else:
        if isinstance(image, np.ndarray):
            reach = FILTER_SUPPORT[interpolation] * max(width / plan.x.resized, height / plan.y.resized) + 1
            left, top = max(int(box[0] - reach), 0), max(int(box[1] - reach), 0)
            right, bottom = min(int(box[2] + reach) + 1, width), min(int(box[3] + reach) + 1, height)
            image = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
            box = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
        resized = image.resize(out_size, resample, box=box, reducing_gap=FAST_REDUCING_GAP)
    if resized.size == (size, size):
        return resized
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, (rx0 - plan.x.start, ry0 - plan.y.start))
    return canvas


def _reducible_in_numpy(frame: np.ndarray) -> bool:
    """Grey or three-channel uint8 arrays; Pillow resamples four channels premultiplied by alpha, so those (and
    other layouts) keep going through Pillow."""
    return frame.dtype == np.uint8 and (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3))


def array_to_rgb(frame: np.ndarray, bgr: bool = False) -> np.ndarray:
    """An HW, HW1, HW3 or HW4 uint8 array → HW3 RGB (alpha dropped, as PIL's convert("RGB") does)."""
    if frame.dtype != np.uint8:
        raise ClipedgeError(f"frame: expected dtype uint8 (pixels 0-255), got {frame.dtype}")
    if frame.ndim == 2:
        return np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ClipedgeError(f"frame: expected an HxW, HxWx3 or HxWx4 uint8 array, got shape {tuple(frame.shape)}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    colour = frame[..., :3]
    return colour[..., ::-1] if bgr else colour


#: an image file's contents (a served request's JPEG/PNG) are decoded exactly as the file would be
ENCODED_TYPES = (bytes, bytearray, memoryview)


def load_image(path: str | Path | bytes, decoding: DecodeOptions = DecodeOptions(),
               draft_for: tuple[int, str] | None = None) -> Image.Image:
    """Decode an image file, or a file's contents as bytes, to RGB the way training did (clipedge.core.images); an
    UnreadableImage (a ClipedgeError naming the file, or "<bytes>", and the reason) otherwise. Bytes and paths
    take the same path through the decoder, so a served JPEG gets the probabilities of the same file on disk.

    ``draft_for=(size, resize_mode)`` (the fast path) lets a JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT
    (PIL's ``draft``) while staying at least ``FAST_REDUCING_GAP`` times larger than what the resize keeps.
    """
    if isinstance(path, ENCODED_TYPES):
        if not len(path):
            raise UnreadableImage(SkippedFile(Path("<bytes>"), "empty", "no bytes"))
        source = io.BytesIO(path)
    else:
        source = Path(path)
        if not source.is_file():
            raise UnreadableImage(SkippedFile(source, "missing", "no such file"))
    if draft_for is None:
        return load_rgb(source, decoding)

    def draft(width: int, height: int) -> tuple[int, int]:
        return tuple(int(side * FAST_REDUCING_GAP) for side in plan_frame(width, height, *draft_for).resized)

    return load_rgb(source, decoding, draft)


def check_resize_quality(quality: str) -> str:
    if quality not in RESIZE_QUALITIES:
        raise ClipedgeError(f"resize_quality {quality!r}: expected one of {', '.join(RESIZE_QUALITIES)}")
    return quality


def prepare_frame(frame: Any, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  bgr: bool = False, quality: str = "exact", decoding: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """One image (path, a file's contents as bytes, PIL image, or HW/HWC uint8 array) → contiguous uint8
    [size, size, 3] RGB.

    ``quality="fast"`` resizes with :func:`fast_resize_and_crop` (and drafts JPEG files); "exact" with
    :func:`resize_and_crop`, open_clip's eval transform to the grey level. ``decoding`` applies to paths and
    bytes only: arrays and PIL images are camera frames, used as they are.
    """
    fast = check_resize_quality(quality) == "fast"
    if isinstance(frame, (str, Path, *ENCODED_TYPES)):
        frame = load_image(frame, decoding, (size, resize_mode) if fast else None)
    if isinstance(frame, Image.Image):
        image = to_rgb(frame)
        resize = fast_resize_and_crop if fast and image.size != (size, size) else resize_and_crop
        return np.asarray(resize(image, size, interpolation, resize_mode), dtype=np.uint8)
    if isinstance(frame, np.ndarray):
        if fast and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] in (3, 4) \
                and frame.shape[:2] != (size, size):
            # resampling treats channels alike: swap BGR on the small result, not on the whole frame
            resized = np.asarray(fast_resize_and_crop(frame[..., :3], size, interpolation, resize_mode))
            return np.ascontiguousarray(resized[..., ::-1]) if bgr else resized
        rgb = array_to_rgb(frame, bgr)
        if rgb.shape[:2] == (size, size):
            return np.ascontiguousarray(rgb)  # already at model size
        image = Image.fromarray(np.ascontiguousarray(rgb))
        resize = fast_resize_and_crop if fast else resize_and_crop
        return np.asarray(resize(image, size, interpolation, resize_mode), dtype=np.uint8)
    raise ClipedgeError(f"frame: expected a path, a PIL image or a uint8 numpy array, got {type(frame).__name__}")


def prepare_whole_frame(frame: Any, decoding: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """One image (path, PIL image, or uint8 array) as an array at its own size, for cutting regions out of it; an
    array is returned as it is (no copy, colour order untouched)."""
    if isinstance(frame, (str, Path, *ENCODED_TYPES)):
        frame = load_image(frame, decoding)
    if isinstance(frame, Image.Image):
        return np.asarray(to_rgb(frame))
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim in (2, 3):
        return frame
    raise ClipedgeError("frame: boxes apply to one image (a path, a PIL image or an HxW(xC) uint8 array), got "
                        f"{type(frame).__name__}{' of shape ' + str(list(frame.shape)) if isinstance(frame, np.ndarray) else ''}")


def prepare_files(paths: list[Path], size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  quality: str = "exact", decoding: DecodeOptions = DecodeOptions()
                  ) -> tuple[np.ndarray, list[SkippedFile]]:
    """Image files → (uint8 [N, size, size, 3] frames, the files that could not be decoded, with why)."""
    frames, unreadable = [], []
    for path in paths:
        try:
            frames.append(prepare_frame(path, size, interpolation, resize_mode, quality=quality, decoding=decoding))
        except UnreadableImage as error:
            unreadable.append(error.skipped)
    stacked = np.stack(frames) if frames else np.zeros((0, size, size, 3), dtype=np.uint8)
    return stacked, unreadable


def prepare_batch(frames: Any, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  bgr: bool = False, quality: str = "exact", decoding: DecodeOptions = DecodeOptions()
                  ) -> tuple[np.ndarray, bool]:
    """Any accepted input → (uint8 [N, size, size, 3] RGB, whether the input was one image).

    Accepted: one image as in :func:`prepare_frame`, a list or tuple of them,
    or an NHWC uint8 batch (passed through untouched when already RGB at size).
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.dtype != np.uint8:
            raise ClipedgeError(f"frames: expected dtype uint8 (pixels 0-255), got {frames.dtype}")
        if frames.shape[1:] == (size, size, 3):
            return np.ascontiguousarray(frames[..., ::-1] if bgr else frames), False
        return np.stack([prepare_frame(f, size, interpolation, resize_mode, bgr, quality) for f in frames]), False
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ClipedgeError("frames: got an empty list")
        return np.stack([prepare_frame(f, size, interpolation, resize_mode, bgr, quality, decoding)
                         for f in frames]), False
    return prepare_frame(frames, size, interpolation, resize_mode, bgr, quality, decoding)[None], True
