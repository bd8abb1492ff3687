"""One writer per destination: an advisory ``flock`` on a hidden lock file beside it.

Two ``clipedge train --out runs/a`` started together each staged a complete run and renamed it into place, so
the second silently replaced the first and both said "run written". A destination is now written by one
process at a time; a second is refused at once, in one line naming the holder.

``flock`` is released by the kernel when its holder dies (``kill -9`` included), so a killed run never blocks
the next: the lock file it leaves behind is just a file, taken over by the next writer. A clean release removes
the file; because another process may have opened it in between, whoever takes the lock checks that the file it
locked is still the one at the path, and starts again otherwise. Torch-free, so every layer may use it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipedge.core.errors import ClipedgeError

#: locks this process holds: lock file → how many nested ``destination_lock`` blocks hold it
_held: dict[Path, int] = {}


def lock_file(destination: Path) -> Path:
    """``runs/a`` → ``runs/.a.lock``: beside the destination, on its filesystem, hidden like the staging folders."""
    destination = Path(os.path.abspath(destination))
    return destination.with_name(f".{destination.name}.lock")


@contextmanager
def destination_lock(destination: str | Path, option: str = "--out") -> Iterator[bool]:
    """Hold the lock of ``destination`` for the block, or raise :class:`ClipedgeError` if another process holds it.

    Re-entrant within a process (the probe in a destination check and the staging step that follows may both
    ask), so a nested block costs nothing and the outermost one releases. Yields whether this block took the
    lock (False when nested): only the taker may treat what it finds beside the destination as left by the dead.
    """
    path = lock_file(Path(destination))
    if path in _held:
        _held[path] += 1
        try:
            yield False
        finally:
            _held[path] -= 1
        return
    descriptor = _acquire(path, f"{option} {destination}")
    _held[path] = 1
    try:
        yield True
    finally:
        del _held[path]
        try:
            os.unlink(path)  # while still locked: whoever opened it meanwhile sees a replaced file and retries
        except FileNotFoundError:
            pass
        os.close(descriptor)


def check_unlocked(destination: str | Path, option: str = "--out") -> None:
    """Refuse early, before any slow work, when another process is writing ``destination``."""
    with destination_lock(destination, option):
        pass


def _acquire(path: Path, culprit: str) -> int:
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise ClipedgeError(f"{culprit}: cannot create the lock file {path} ({error.strerror})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise ClipedgeError(f"{culprit}: another clipedge process{holder} is writing it now; wait for it to "
                                "finish or choose another destination") from None
        if _is_current(path, descriptor):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)  # locked a file its previous holder had already removed: take the new one


def _is_current(path: Path, descriptor: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _holder(descriptor: int) -> str:
    """`` (pid 1234)`` from the lock file, or nothing when it cannot be read (the holder is still writing it)."""
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return f" (pid {text})" if text.isdigit() else ""
