"""Finding image files among user-given files and folders (``predict``, ``bench --images``, INT8 ``--calib``).

One walker, one order, everywhere: the inputs as given; inside a folder, its files by name, then its
subfolders by name, recursively. The walk is lazy (one directory listing held at a time), so ``predict`` runs
over folders of any size in flat memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from clipedge.core.errors import ClipedgeError


def image_suffixes() -> set[str]:
    """Every file extension PIL knows; in folders, other files are skipped without being opened."""
    return {suffix.lower() for suffix in Image.registered_extensions()}


def check_inputs(inputs: Iterable[Path], option: str = "IMAGES") -> list[Path]:
    """The inputs, each an existing file or folder; a one-line error names the first that is neither."""
    checked = [Path(item) for item in inputs]
    for item in checked:
        if not (item.is_dir() or item.is_file()):
            raise ClipedgeError(f"{option} {item}: no such file or folder")
    return checked


def walk_files(inputs: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    """Every file under ``inputs`` as (path, whether it may be an image), lazily, in the module's order.

    A file given directly is always a candidate; in folders, only files with an image suffix PIL knows are.
    """
    suffixes = image_suffixes()
    for item in inputs:
        if not item.is_dir():
            yield item, True
            continue
        for folder, subfolders, files in os.walk(item):
            subfolders.sort()
            for name in sorted(files):
                path = Path(folder, name)
                if path.is_file():
                    yield path, path.suffix.lower() in suffixes


def collect_images(inputs: Iterable[Path], option: str = "IMAGES") -> tuple[list[Path], list[Path]]:
    """(candidate images, skipped files), listed in the walker's order, for callers that need the whole list."""
    images: list[Path] = []
    skipped: list[Path] = []
    for path, candidate in walk_files(check_inputs(inputs, option)):
        (images if candidate else skipped).append(path)
    return images, skipped
