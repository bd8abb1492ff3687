"""The example images of a class to learn, from files and folders, under the runtime's one decode policy.

A folder of photos taken on site will hold a few files that do not decode (a half-copied JPEG, a ``.DS_Store``):
those are skipped with the decode policy's reason and reported, the rest are used. Only when none decodes is the
add refused, in one line that counts the reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import SkippedFile
from clipedge.runtime.preprocessing.image_files import collect_images


def is_file_input(images: Any) -> bool:
    """Whether ``images`` names files or folders (a path, or a list of paths) rather than pixels."""
    if isinstance(images, (str, Path)):
        return True
    return isinstance(images, (list, tuple)) and bool(images) and all(isinstance(i, (str, Path)) for i in images)


def decode_class_images(images: str | Path | Sequence[str | Path],
                        prepare_files: Callable[[list[Path]], tuple[np.ndarray, list[SkippedFile]]]
                        ) -> tuple[np.ndarray, tuple[SkippedFile, ...]]:
    """(frames of every file under ``images`` that decodes, the files skipped and why); ``prepare_files`` is the
    classifier's own preprocessing of a file list."""
    inputs = [Path(images)] if isinstance(images, (str, Path)) else [Path(i) for i in images]
    files, _ = collect_images(inputs, "images")
    where = ", ".join(str(i) for i in inputs)
    if not files:
        raise ClipedgeError(f"images {where}: no image files found")
    frames, unreadable = prepare_files(files)
    if not len(frames):
        reasons = ", ".join(f"{count} {reason}" for reason, count in Counter(s.reason for s in unreadable).most_common())
        raise ClipedgeError(f"images {where}: none of the {len(files)} files decodes ({reasons}; first: "
                            f"{unreadable[0].path.name})")
    return frames, tuple(unreadable)
