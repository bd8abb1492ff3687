"""Reading user images robustly: any file either decodes to RGB or is skipped with a one-word reason.

Few-shot data sets are hand-collected folders and camera archives, so a stray
``.DS_Store``, a zero-byte file, a half-copied JPEG, a sub-format the image
library does not implement or a file declaring a gigapixel size is normal.
Whatever a decoder raises about a file (Pillow's plugins raise far more than
``OSError``: ``NotImplementedError``, ``IndexError``, ``SyntaxError``,
``struct.error``, ``EOFError``, ...) becomes :class:`UnreadableImage`, so
callers catch one type; errors that are not about the file (``MemoryError``,
``KeyboardInterrupt``, too many open files, an I/O error of the disk, bugs)
still propagate.

Decoding also:

- applies the EXIF orientation (``DecodeOptions.exif_transpose``), so a phone
  photo gives the same pixels at training and at run time;
- refuses a file whose declared size exceeds ``max_pixels`` from its header,
  before any pixel buffer is allocated;
- uses the first frame of animations and multi-page files;
- inside a CLI command (:func:`capturing_decoder_messages`), captures what C
  decoders (libtiff, libjpeg) print on file descriptor 2 and the library's
  Python warnings, per file, into :data:`DECODER_MESSAGES`, so the command
  can summarise them instead of dumping them on the terminal.

Torch-free: the runtime decodes through this module too.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipedge.core.decoder_messages import DECODER_MESSAGES, quiet_decoding
from clipedge.core.errors import ClipedgeError

log = logging.getLogger(__name__)

#: What Pillow's decoders raise for files that are not (complete, supported) images, found by decoding
#: crafted files and Pillow's own corpus of fuzzer findings. UnidentifiedImageError is an OSError.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, NotImplementedError, struct.error,
                Image.DecompressionBombError)
#: manifest entry recording how a run decoded its files (eval, calibrate and export decode the same way)
MANIFEST_KEY = "decoding"


@dataclass(frozen=True)
class DecodeOptions:
    """How files are decoded. ``max_pixels`` None means Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89 MP)."""

    exif_transpose: bool = True
    max_pixels: int | None = None

    @property
    def pixel_limit(self) -> int | None:
        return self.max_pixels if self.max_pixels is not None else Image.MAX_IMAGE_PIXELS

    def to_manifest(self) -> dict[str, Any]:
        return {"exif_transpose": self.exif_transpose, "max_image_pixels": self.pixel_limit}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> DecodeOptions:
        """A run's decoding; runs written before it was recorded never applied EXIF orientation."""
        entry = manifest.get(MANIFEST_KEY)
        if not isinstance(entry, dict):
            return cls(exif_transpose=False)
        return cls(bool(entry.get("exif_transpose", False)), entry.get("max_image_pixels"))


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a run, with a one-word reason (see :func:`reason_of`) and the library's words."""

    path: Path
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_dict(cls, entry: dict[str, str]) -> SkippedFile:
        return cls(Path(entry["path"]), str(entry["reason"]), str(entry.get("detail", "")))


class UnreadableImage(ClipedgeError):
    """One file that cannot be used as an image; ``skipped`` says which and why."""

    def __init__(self, skipped: SkippedFile):
        detail = f": {skipped.detail}" if skipped.detail else ""
        super().__init__(f"image {skipped.path}: not a readable image ({skipped.reason}{detail})")
        self.skipped = skipped


def reason_of(error: BaseException, path: Path) -> str:
    """The one-word reason a decoder error stands for."""
    if isinstance(error, Image.DecompressionBombError):
        return "too-large"
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, (PermissionError, IsADirectoryError)):
        return "no-access"
    if isinstance(error, UnidentifiedImageError):
        return "empty" if path.is_file() and path.stat().st_size == 0 else "not-an-image"
    if isinstance(error, NotImplementedError) or "unsupported" in str(error).lower():
        return "unsupported"
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return "truncated"
    return "corrupt"


#: OSErrors about the machine, not the file: skipping (and recording) the file for them would lose a good image
ENVIRONMENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO})


def _about_the_machine(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


def _unreadable(error: BaseException, path: Path) -> UnreadableImage:
    detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return UnreadableImage(SkippedFile(path, reason_of(error, path), detail))


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


#: Image.MAX_IMAGE_PIXELS is one per process: every open here holds this, so a limit one open raises for itself
#: is never seen by another
_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pillow_allows(limit: int | None) -> Iterator[None]:
    """Pillow refuses above twice its own MAX_IMAGE_PIXELS while opening; a larger chosen limit is honoured
    for this one open, and Pillow's value restored. Every open here holds the lock (reading a header is quick), so
    no other decode through this module sees the raised value."""
    with _LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        if limit is None or saved is None or limit <= saved:
            yield
            return
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


#: the plugins Pillow registers first when it opens a file without a known extension (``Image.preinit``)
COMMON_PLUGINS = ("PIL.BmpImagePlugin", "PIL.GifImagePlugin", "PIL.JpegImagePlugin", "PIL.PpmImagePlugin",
                  "PIL.PngImagePlugin")


def identification_order() -> tuple[str, ...]:
    """Every image format Pillow knows, in the order Pillow tries them when nothing was registered before (the
    common plugins, then all the others by module name), whatever was opened before.

    Pillow 13 registers plugins lazily, the one for a file's extension first, so the order it tries formats in,
    and with it which plugin claims a file, depended on the files opened earlier in the process: after a ``.tga``,
    TGA's lenient header check claimed some ``.ico`` files, which then failed to load (found on Pillow's own test
    corpus; tests/test_inputs.py crafts such a file). Passing this order makes a file's outcome its own.
    """
    Image.init()
    return _ordered(tuple(Image.ID))


@lru_cache(maxsize=8)
def _ordered(formats: tuple[str, ...]) -> tuple[str, ...]:
    def rank(name: str) -> tuple[bool, str]:
        module = Image.OPEN[name][0].__module__
        return module not in COMMON_PLUGINS, module

    return tuple(sorted(formats, key=rank))  # a stable sort: one plugin's formats keep their order


def _open(source: Path | BinaryIO, path: Path, options: DecodeOptions) -> Image.Image:
    """Open (header only) and refuse a declared size above the limit before any pixels are allocated, and an
    image of no pixels (Pillow's stub formats such as GRIB, BUFR and HDF5 open as 0x0 and have no decoder)."""
    with _pillow_allows(options.pixel_limit):
        image = Image.open(source, formats=identification_order())
    if not image.width or not image.height:
        image.close()
        reason = "unsupported" if isinstance(image, ImageFile.StubImageFile) else "corrupt"
        raise UnreadableImage(SkippedFile(path, reason, f"{image.format} declaring {image.width}x{image.height} pixels"))
    limit = options.pixel_limit
    if limit is not None and image.width * image.height > limit:
        image.close()
        raise UnreadableImage(SkippedFile(path, "too-large", f"{image.width}x{image.height} = "
                                          f"{image.width * image.height:,} pixels, above the limit of {limit:,} "
                                          "(--max-image-pixels)"))
    return image


def _oriented(image: Image.Image, path: Path) -> Image.Image:
    """The image as the camera meant it; unreadable EXIF keeps the stored orientation and is noted."""
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image that is already upright
        return image
    except IMAGE_ERRORS as error:
        DECODER_MESSAGES.record(path, f"EXIF orientation not applied ({type(error).__name__}: {error})")
        return image


def load_rgb(source: str | Path | BinaryIO, options: DecodeOptions = DecodeOptions(),
             draft: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Decode the first frame of an image file (a path, or an open binary stream such as a served request's
    bytes, named "<bytes>" in messages) into RGB; raises :class:`UnreadableImage` for a bad file.

    ``draft`` maps the stored width and height to the smallest size the caller will use; a JPEG then decodes
    at the smallest DCT scale (1/2, 1/4, 1/8) that still covers it (Pillow's ``draft``), before orientation.
    """
    path = Path(source) if isinstance(source, (str, os.PathLike)) else Path("<bytes>")
    with quiet_decoding(path):
        try:
            with _open(path if isinstance(source, (str, os.PathLike)) else source, path, options) as image:
                if draft is not None:
                    image.draft(None, draft(*image.size))
                image.load()
                return to_rgb(_oriented(image, path) if options.exif_transpose else image)
        except IMAGE_ERRORS as error:
            if _about_the_machine(error):
                raise
            raise _unreadable(error, path) from None


def check_image(path: str | Path, options: DecodeOptions = DecodeOptions()) -> SkippedFile | None:
    """A cheap header check used while scanning folders (full decoding happens at extraction): None if the
    file looks like a usable image, else why not."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return SkippedFile(path, "empty")
        with quiet_decoding(path), _open(path, path, options) as image:
            image.verify()
        return None
    except UnreadableImage as error:
        return error.skipped
    except IMAGE_ERRORS as error:
        if _about_the_machine(error):
            raise
        return _unreadable(error, path).skipped
