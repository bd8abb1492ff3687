"""Finding image files among user-given files and folders (``predict``, ``bench --images``, INT8 ``--calib``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from clipedge.errors import ClipedgeError


def image_suffixes() -> set[str]:
    """Every file extension PIL knows; in folders, other files are skipped without being opened."""
    return {suffix.lower() for suffix in Image.registered_extensions()}


def collect_images(inputs: tuple[Path, ...] | list[Path], option: str = "IMAGES") -> tuple[list[Path], list[Path]]:
    """(candidate images, skipped files): files given directly, and files with image suffixes found in folders."""
    suffixes = image_suffixes()
    images: list[Path] = []
    skipped: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                (images if path.suffix.lower() in suffixes else skipped).append(path)
        elif item.is_file():
            images.append(item)
        else:
            raise ClipedgeError(f"{option} {item}: no such file or folder")
    return images, skipped
