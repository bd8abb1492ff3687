"""Live class-bank swap for a served adaptable model.

``clipedge classes`` writes a bank atomically (temp name + ``os.replace``), so a change shows as a new
(inode, mtime, size) of the bank path. A daemon thread looks at that triple every :data:`POLL_SECONDS`; on a
change it builds a complete new :class:`~clipedge.runtime.Classifier` over the new bank (loading verifies the
bank's checksum, schema and embedding space) and only then replaces the reference the model serves with. A
request batch reads the reference once, so it is answered wholly by the old bank or wholly by the new one; a
bank that does not load is reported through ``log`` (which ``clipedge serve`` relays, ``bank_reports.py``)
and the old classifier keeps serving.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.classifier import Classifier

from .bank_reports import BANK_MARK, REFUSED

#: how often the bank file's (inode, mtime, size) is compared; a change is served within this plus one load
POLL_SECONDS = 0.5


def file_state(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of ``path``, or None while it is absent (between unlink and rename)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class BankWatcher:
    """Holds the served :class:`Classifier` and swaps it when the bank file changes."""

    def __init__(self, build: Callable[[], Classifier], bank: Path, log: Callable[[str], None],
                 poll_seconds: float = POLL_SECONDS) -> None:
        self._build, self.bank, self._log, self._poll = build, bank, log, poll_seconds
        self._state = file_state(bank)
        self.classifier = build()
        self.revision = self.classifier.classes.bank.revision if self.classifier.classes else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipedge-bank-watch", daemon=True)
        self._thread.start()

    def check(self) -> bool:
        """Swap in the bank on disk if its file changed since the last look; True when a new bank is served."""
        state = file_state(self.bank)
        if state is None or state == self._state:
            return False
        self._state = state
        try:
            fresh = self._build()
        except ClipedgeError as error:
            self._log(f"{BANK_MARK}{self.bank}: {REFUSED}, still serving revision {self.revision} ({error})")
            return False
        retired, self.classifier = self.classifier, fresh
        self.revision = fresh.classes.bank.revision if fresh.classes else None
        self._log(f"{BANK_MARK}{self.bank}: now serving revision {self.revision} "
                  f"({len(fresh.labels)} classes)")
        # the retired classifier may still be answering a batch that read it before the swap: let it be
        # collected when that batch drops its reference instead of closing its session under it
        del retired
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            self.check()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.classifier.close()
