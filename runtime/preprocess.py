"""Frames to model input, in numpy/PIL, matching open_clip's eval transform.

open_clip resizes the shortest side to the model size with bicubic
interpolation (PIL's, antialiased), then centre-crops. Doing the same with PIL
here keeps the runtime torch-free and within one grey level of training-time
preprocessing. Frames already at model size skip all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from clipedge.errors import ClipedgeError

INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def resize_shortest_and_crop(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image, reproduced exactly."""
    width, height = image.size
    if (width, height) != (size, size):
        if width <= height:
            new_width, new_height = size, int(size * height / width)
        else:
            new_width, new_height = int(size * width / height), size
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), INTERPOLATIONS.get(interpolation, Image.Resampling.BICUBIC))
        left = int(round((new_width - size) / 2.0))
        top = int(round((new_height - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    return image


def _array_to_rgb(frame: np.ndarray, bgr: bool) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise ClipedgeError(f"frame: expected dtype uint8 (0-255 pixels), got {frame.dtype}")
    if frame.ndim == 2:
        return np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ClipedgeError(f"frame: expected an HxW, HxWx3 or HxWx4 uint8 array, got shape {tuple(frame.shape)}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    colour = frame[..., :3]
    return colour[..., ::-1] if bgr else colour


def to_pil_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def prepare_frame(frame: Any, size: int, interpolation: str = "bicubic", bgr: bool = False) -> np.ndarray:
    """One image (path, PIL image or HWC/HW uint8 array) → uint8 [size, size, 3] RGB."""
    if isinstance(frame, (str, Path)):
        path = Path(frame)
        if not path.is_file():
            raise ClipedgeError(f"image {path}: no such file")
        try:
            with Image.open(path) as opened:
                opened.load()
                frame = to_pil_rgb(opened)
        except (OSError, ValueError, SyntaxError) as error:
            raise ClipedgeError(f"image {path}: not a readable image ({type(error).__name__})") from None
    if isinstance(frame, Image.Image):
        return np.asarray(resize_shortest_and_crop(to_pil_rgb(frame), size, interpolation), dtype=np.uint8)
    if isinstance(frame, np.ndarray):
        rgb = _array_to_rgb(frame, bgr)
        if rgb.shape[:2] == (size, size):
            return np.ascontiguousarray(rgb)  # the fast path: already at model size
        return np.asarray(resize_shortest_and_crop(Image.fromarray(np.ascontiguousarray(rgb)), size, interpolation), dtype=np.uint8)
    raise ClipedgeError(f"frame: expected a path, a PIL image or a uint8 numpy array, got {type(frame).__name__}")


def prepare_batch(frames: Any, size: int, interpolation: str = "bicubic", bgr: bool = False) -> tuple[np.ndarray, bool]:
    """Any accepted input → (uint8 [N, size, size, 3], whether the input was a single image)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.dtype != np.uint8:
            raise ClipedgeError(f"frames: expected dtype uint8, got {frames.dtype}")
        if frames.shape[1:] == (size, size, 3) and not bgr:
            return np.ascontiguousarray(frames), False
        return np.stack([prepare_frame(f, size, interpolation, bgr) for f in frames]), False
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ClipedgeError("frames: got an empty list")
        return np.stack([prepare_frame(f, size, interpolation, bgr) for f in frames]), False
    return prepare_frame(frames, size, interpolation, bgr)[None], True


def chunks(batch: np.ndarray, size: int) -> Sequence[np.ndarray]:
    return [batch[start : start + size] for start in range(0, len(batch), size)]
