"""What the served model says about its class bank, relayed from Triton's log to the user of ``clipedge serve``.

The python-backend model reports each swap and each refused bank through Triton's logger (it has no other
channel), and ``clipedge serve`` keeps Triton's log in its private workspace. Without the relay a bank
written wrongly would be refused in silence, the old classes served on while the user believes the new
ones are. Both served models (``NAME`` and ``NAME_encoded``) watch the same bank and say the same thing, so
a line repeated back to back is relayed once.
"""

from __future__ import annotations

from pathlib import Path

#: how every line of :class:`~.bank_watch.BankWatcher` begins (after Triton's own prefix)
BANK_MARK = "class bank "
#: what a refused bank's line says (relayed as a warning; a swap is information)
REFUSED = "not swapped in"


class BankReports:
    """New bank lines of a growing log, from where the previous call stopped; a new log file starts over."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._offset = 0
        self._last: str | None = None

    def new_lines(self, log_path: Path | None) -> list[str]:
        """The bank lines completed in ``log_path`` since the last call (Triton's prefix and quotes removed)."""
        if log_path != self._path:  # a restarted server writes a new log in a new workspace
            self._path, self._offset = log_path, 0
        if log_path is None or not log_path.is_file():
            return []
        with open(log_path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1  # a line Triton is still writing waits for the next call
        self._offset += complete
        lines = []
        for line in data[:complete].decode(errors="replace").splitlines():
            if BANK_MARK not in line:
                continue
            message = line[line.index(BANK_MARK):].rstrip().rstrip('"')
            if message != self._last:
                lines.append(message)
                self._last = message
        return lines
