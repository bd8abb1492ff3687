"""Frames to model input in numpy/PIL, reproducing open_clip's eval transform.

An exported model takes uint8 RGB frames at its own resolution; everything
else (decoding, colour order, resizing, cropping) happens here, torch-free.
open_clip's eval transform is, per ``resize_mode``: ``shortest`` (the default)
resizes the shortest side to the model size and centre-crops, ``squash``
resizes to a square ignoring the aspect ratio, ``longest`` resizes the longest
side and pads with black. The resampling is PIL's own (antialiased), exactly
what torchvision does on PIL images, so results agree with training-time
preprocessing to within one grey level (tests check this on photographs).
Frames already at model size skip all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipedge.errors import ClipedgeError
from clipedge.images import DecodeOptions, SkippedFile, UnreadableImage, load_rgb, to_rgb

from .contract import RESIZE_MODES

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


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
    if resize_mode == "squash":
        return image.resize((size, size), resample)
    if resize_mode == "shortest":  # torchvision Resize(int): the long side is truncated, not rounded
        short, long = min(width, height), max(width, height)
        scaled = (size, int(size * long / short))
        new_width, new_height = scaled if width <= height else scaled[::-1]
    elif resize_mode == "longest":  # open_clip's ResizeKeepRatio(longest=1): both sides rounded
        ratio = max(width, height) / size
        new_width, new_height = round(width / ratio), round(height / ratio)
    else:
        raise ClipedgeError(f"resize_mode {resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), resample)
    if new_width < size or new_height < size:  # only "longest" gets here: pad with black, centred
        canvas = Image.new("RGB", (max(size, new_width), max(size, new_height)))
        canvas.paste(image, ((canvas.width - new_width) // 2, (canvas.height - new_height) // 2))
        image, new_width, new_height = canvas, canvas.width, canvas.height
    left, top = int(round((new_width - size) / 2.0)), int(round((new_height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


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


def load_image(path: str | Path, decoding: DecodeOptions = DecodeOptions()) -> Image.Image:
    """Decode an image file to RGB the way training did (clipedge.images); an UnreadableImage (a ClipedgeError
    naming the file and the reason) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage(SkippedFile(path, "missing", "no such file"))
    return load_rgb(path, decoding)


def prepare_frame(frame: Any, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  bgr: bool = False, decoding: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """One image (path, PIL image, or HW/HWC uint8 array) → contiguous uint8 [size, size, 3] RGB.

    ``decoding`` applies to paths only: arrays and PIL images are camera frames, used as they are."""
    if isinstance(frame, (str, Path)):
        frame = load_image(frame, decoding)
    if isinstance(frame, Image.Image):
        return np.asarray(resize_and_crop(to_rgb(frame), size, interpolation, resize_mode), dtype=np.uint8)
    if isinstance(frame, np.ndarray):
        rgb = array_to_rgb(frame, bgr)
        if rgb.shape[:2] == (size, size):
            return np.ascontiguousarray(rgb)  # the fast path: already at model size
        image = Image.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(resize_and_crop(image, size, interpolation, resize_mode), dtype=np.uint8)
    raise ClipedgeError(f"frame: expected a path, a PIL image or a uint8 numpy array, got {type(frame).__name__}")


def prepare_files(paths: list[Path], size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  decoding: DecodeOptions = DecodeOptions()) -> tuple[np.ndarray, list[SkippedFile]]:
    """Image files → (uint8 [N, size, size, 3] frames, the files that could not be decoded, with why)."""
    frames, unreadable = [], []
    for path in paths:
        try:
            frames.append(prepare_frame(path, size, interpolation, resize_mode, decoding=decoding))
        except UnreadableImage as error:
            unreadable.append(error.skipped)
    stacked = np.stack(frames) if frames else np.zeros((0, size, size, 3), dtype=np.uint8)
    return stacked, unreadable


def prepare_batch(frames: Any, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest",
                  bgr: bool = False, decoding: DecodeOptions = DecodeOptions()) -> tuple[np.ndarray, bool]:
    """Any accepted input → (uint8 [N, size, size, 3] RGB, whether the input was one image).

    Accepted: one image as in :func:`prepare_frame`, a list or tuple of them,
    or an NHWC uint8 batch (passed through untouched when already RGB at size).
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.dtype != np.uint8:
            raise ClipedgeError(f"frames: expected dtype uint8 (pixels 0-255), got {frames.dtype}")
        if frames.shape[1:] == (size, size, 3):
            return np.ascontiguousarray(frames[..., ::-1] if bgr else frames), False
        return np.stack([prepare_frame(f, size, interpolation, resize_mode, bgr) for f in frames]), False
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ClipedgeError("frames: got an empty list")
        return np.stack([prepare_frame(f, size, interpolation, resize_mode, bgr, decoding) for f in frames]), False
    return prepare_frame(frames, size, interpolation, resize_mode, bgr, decoding)[None], True
