"""Files appear whole or not at all: checked destinations, temporary names, one rename, one writer.

Torch-free, so every package (the runtime included) may use it. An export or an engine build takes minutes and
can be interrupted or fail its gate; either way no half-written ``model.onnx`` or ``model.engine`` may be left
where a camera pipeline would load it. Small files go to a temporary name beside the destination; artifacts are
staged in a hidden folder beside it (same filesystem, so ``os.replace`` is atomic) and renamed only after the
last check passed. The staging step holds the destination's lock (clipedge.core.lock), so two writers cannot
replace each other's work, and removes the staging folders that killed writers left behind. A full disk is one
line, not a traceback, and the staging folder that filled it is removed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipedge.core.errors import ClipedgeError
from clipedge.core.lock import check_unlocked, destination_lock

#: what a full filesystem or an exhausted quota raises (safetensors reports it as text: "(os error 28)")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: tempfile.mkdtemp's random part: 8 of these characters
_TEMP_CHARACTERS = "[a-z0-9_]{8}"


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        raise_if_disk_full(error, path)
        raise
    os.replace(partial, path)


def check_destination(out: Path) -> None:
    """Fail before any slow work when ``out`` cannot be written (or another process is writing it)."""
    if out.is_dir():
        raise ClipedgeError(f"--out {out}: is a directory; give a file name such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise ClipedgeError(f"--out {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ClipedgeError(f"--out {out}: folder {out.parent} is not writable")
    check_unlocked(out)


class DiskFull(ClipedgeError):
    """No space left (or over quota) while writing; a staging step reports it for its own destination."""


def is_disk_full(error: BaseException) -> bool:
    """An OSError's errno, else the text: safetensors says "(os error 28)", shutil.copytree lists "[Errno 28]"."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in DISK_FULL
    text = str(error)
    return any(f"(os error {code})" in text or f"[Errno {code}]" in text for code in DISK_FULL)


def raise_if_disk_full(error: BaseException, destination: Path, culprit: str = "--out") -> None:
    """Turn a full disk met while writing ``destination`` into its one line (also when a step inside, such as
    the feature cache, already reported it for its own file); anything else is left alone."""
    if isinstance(error, DiskFull) or is_disk_full(error):
        raise DiskFull(f"{culprit} {destination}: no space left on the device (or over quota) while writing; "
                            "nothing was written and what was there is untouched; free some space and run again") from None


def stale_staging_folders(destination: Path) -> list[Path]:
    """Staging folders of ``destination`` (``.NAME.xxxxxxxx.partial``) beside it: call with its lock held, when
    every one of them belongs to a writer that died (a live writer would hold the lock)."""
    pattern = re.compile(rf"\.{re.escape(destination.name)}\.{_TEMP_CHARACTERS}\.partial")
    if not destination.parent.is_dir():
        return []
    return sorted(p for p in destination.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()
                  and not p.is_symlink())


@contextmanager
def staging_folder(destination: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``destination``, under its lock; removed with whatever is left in it.

    Staging folders that killed writers left beside ``destination`` are removed first (they held the disk)."""
    destination = Path(destination)
    with destination_lock(destination) as taken:
        for stale in stale_staging_folders(destination) if taken else []:
            shutil.rmtree(stale, ignore_errors=True)
        try:
            folder = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
        except OSError as error:
            raise_if_disk_full(error, destination)
            raise
        try:
            yield folder
        except BaseException as error:
            raise_if_disk_full(error, destination)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def as_if_made_by_mkdir(folder: Path) -> None:
    """Give a staging folder that is published whole (a run directory, a DeepStream folder) the permissions
    ``mkdir`` would have: mkdtemp makes it private (0700), and other users (a container's) must read it."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def publish(staged: Path, destination: Path) -> None:
    """Move a finished file from the staging folder to its final name in one atomic step."""
    os.replace(staged, destination)
