"""Artifacts appear whole or not at all: checked destinations, temporary names, one rename.

An export takes minutes on a real backbone and can be interrupted or fail its
parity gate; either way no half-written ``model.onnx`` may be left where a
camera pipeline would load it. Everything is written under a hidden
temporary name in the destination folder (same filesystem, so ``os.replace``
is atomic) and renamed only after the last check passed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clipedge.errors import ClipedgeError


def check_destination(out: Path) -> None:
    """Fail before any slow work when ``out`` cannot be written."""
    if out.is_dir():
        raise ClipedgeError(f"--out {out}: is a directory; give a file name such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise ClipedgeError(f"--out {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ClipedgeError(f"--out {out}: folder {out.parent} is not writable")


@contextmanager
def staging_folder(destination: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``destination``; removed with whatever is left in it."""
    folder = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(staged: Path, destination: Path) -> None:
    """Move a finished file from the staging folder to its final name in one atomic step."""
    os.replace(staged, destination)
