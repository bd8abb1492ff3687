"""Crafted image files, one per decoder failure class, each with the reason clipedge must skip it with."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from conftest import make_image
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def dds_with_fourcc(fourcc: bytes) -> bytes:
    """A DDS header whose compressed pixel format (FourCC) Pillow does not implement."""
    header = struct.pack("<7I", 124, 0x1 | 0x2 | 0x4 | 0x1000, 4, 4, 0, 0, 0) + bytes(44)
    pixel_format = struct.pack("<2I", 32, 0x4) + fourcc + bytes(20)
    return b"DDS " + header + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + bytes(64)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, the reason it must be skipped with): one file per decoder failure class."""
    photo = make_image((200, 120, 40), np.random.default_rng(5), size=64)
    jpeg, png = encoded(photo, "JPEG", quality=90), encoded(photo, "PNG")
    pixels = png_chunk(b"IDAT", zlib.compress(b"\x00" + bytes(12)) * 4)
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),  # passes the header check, fails to decode
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "wrong_magic.jpg": (b"GIF89a" + bytes(40), "not-an-image"),
        "empty.png": (b"", "empty"),
        "bc7.dds": (dds_with_fourcc(b"ZZZ9"), "unsupported"),  # NotImplementedError in Pillow's DDS plugin
        # a format Pillow identifies but cannot decode: it opens as a 0x0 image (the fast resize divided by zero)
        "stub.bufr": (b"BUFR" + bytes(60), "unsupported"),
        "no_frames.png": (png_header(128, 64) + png_chunk(b"acTL", bytes(8)) + png_chunk(b"IEND", b""), "corrupt"),
        "huge.png": (png_header(100_000, 100_000) + pixels + png_chunk(b"IEND", b""), "too-large"),
        "large.png": (png_header(12_000, 12_000) + pixels + png_chunk(b"IEND", b""), "too-large"),
    }
