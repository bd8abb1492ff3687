"""Small files written whole or not at all: a temporary name beside the destination, then one rename.

Torch-free, so every package (the runtime included) may use it. Large artifacts are staged in a folder
instead (clipedge.export.files, clipedge.run_dir), for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(partial, path)
