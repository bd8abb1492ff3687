"""Reading user images robustly: any PIL mode becomes RGB, and bad files are reported, not fatal.

Few-shot data sets are hand-collected folders, so a stray ``.DS_Store``, a
zero-byte file or a half-copied JPEG is normal. Those are skipped and counted
by path; they never stop a run half-way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Errors PIL raises for files that are not (complete) images.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    High-bit-depth grayscale (I;16, I, F) is rescaled to its own range first,
    because PIL's direct conversion clips it to white.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))  # 2-D uint8 is mode L
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB") if image.mode != "RGB" else image


def load_rgb(path: Path) -> Image.Image:
    """Decode a whole image file into RGB; raises one of IMAGE_ERRORS for a bad file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's EXIF and palette warnings are noise for users
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)


def is_readable_image(path: Path) -> bool:
    """A cheap header check used while scanning folders; full decoding happens at extraction."""
    try:
        if path.stat().st_size == 0:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.verify()
        return True
    except IMAGE_ERRORS:
        return False
