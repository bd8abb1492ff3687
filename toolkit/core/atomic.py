"""Files appear whole or not at all: checked destinations, temporary names, one rename.

Torch-free, so every package (the runtime included) may use it. An export or an engine build takes minutes and
can be interrupted or fail its gate; either way no half-written ``model.onnx`` or ``model.engine`` may be left
where a camera pipeline would load it. Small files go to a temporary name beside the destination; artifacts are
staged in a hidden folder beside it (same filesystem, so ``os.replace`` is atomic) and renamed only after the
last check passed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipedge.core.errors import ClipedgeError


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(partial, path)


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
