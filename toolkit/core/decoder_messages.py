"""What image decoders print while a CLI command runs, captured per file for one summary line.

C decoders (libtiff, libjpeg) write warnings straight to file descriptor 2 and Pillow raises Python warnings;
on a folder of camera archives that is hundreds of lines. Inside :func:`capturing_decoder_messages` (only a CLI
command turns it on) they are recorded per file into :data:`DECODER_MESSAGES`; outside it nothing is
redirected, because a library must not take over its host's stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class DecoderMessages:
    """What decoders said about each file (C libraries on stderr, Pillow's warnings), for one summary line.

    Recording happens only inside :func:`capturing_decoder_messages` (a CLI command), so a long-lived library user
    (a Classifier in a camera loop, a served model) accumulates nothing.
    """

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._lock = threading.Lock()
        self.capturing = False

    def record(self, path: Path, text: str) -> None:
        if not self.capturing:
            log.debug("%s: %s", path, text)
            return
        with self._lock:
            self._by_file[str(path)] = (self._by_file.get(str(path), "") + "\n" + text).strip()

    def files(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_file)

    def clear(self) -> None:
        with self._lock:
            self._by_file.clear()

    def summary(self, verbose: bool) -> list[str]:
        """One line ("12 files produced decoder warnings; --verbose lists them"), or with ``verbose`` every file."""
        files = self.files()
        if not files:
            return []
        if not verbose:
            return [f"{len(files)} file(s) produced decoder warnings; --verbose lists them"]
        lines = [f"{len(files)} file(s) produced decoder warnings:"]
        for path, text in sorted(files.items()):
            lines.append(f"  {path}: " + " | ".join(line.strip() for line in text.splitlines() if line.strip()))
        return lines


DECODER_MESSAGES = DecoderMessages()
#: file descriptor 2 is one per process: decodes that redirect it take turns (only while capturing)
_DECODE_LOCK = threading.RLock()
@contextmanager
def capturing_decoder_messages() -> Iterator[DecoderMessages]:
    """For one CLI command: inside the block, what decoders print on file descriptor 2 and Pillow's warnings are
    captured per file into :data:`DECODER_MESSAGES` for the command's one summary line (empty before and after).

    Only a command turns this on, because capturing redirects the process's fd 2 and its warnings filter: a
    library must not do that to its host (another thread's output during a decode would be taken for the
    decoder's), and decodes take turns while it is on. A command decodes in one thread, so neither matters there.
    """
    DECODER_MESSAGES.clear()
    DECODER_MESSAGES.capturing = True
    try:
        yield DECODER_MESSAGES
    finally:
        DECODER_MESSAGES.capturing = False
        DECODER_MESSAGES.clear()


class _Sink:
    """One temporary file per process that decoders' stderr is redirected into (reused: creating a file per
    decode costs more than decoding a small image). Used only under _DECODE_LOCK."""

    def __init__(self) -> None:
        self.fd, self.pid = -1, -1

    def fileno(self) -> int:
        if self.pid != os.getpid():  # a forked worker gets its own file, not its parent's offset
            self.fd, name = tempfile.mkstemp(prefix="clipedge-decoder-")
            os.unlink(name)  # nameless: the file goes away with the process
            self.pid = os.getpid()
        return self.fd

    def take(self) -> str:
        """What arrived since the last take, emptying the file."""
        fd = self.fileno()
        size = os.lseek(fd, 0, os.SEEK_END)
        if not size:
            return ""
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, size).decode("utf-8", errors="replace")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return text


_SINK = _Sink()


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Redirect file descriptor 2 into the sink for the block; yields a list that then holds what arrived."""
    captured: list[str] = []
    try:
        sink = _SINK.fileno()  # first: if no sink can be made, nothing has been duplicated yet
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no sink (a full /tmp) or no stderr (a daemon): no capture
        yield captured
        return
    os.dup2(sink, 2)
    try:
        yield captured
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        captured.append(_SINK.take())


@contextmanager
def quiet_decoding(path: Path) -> Iterator[None]:
    """While a command captures (:func:`capturing_decoder_messages`), C-library stderr output and Python warnings
    while decoding ``path`` go to :data:`DECODER_MESSAGES` (a skipped file is reported with its reason instead);
    otherwise they go where they always go."""
    if not DECODER_MESSAGES.capturing:
        yield
        return
    with _DECODE_LOCK, _stderr_captured() as stderr, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    text = "\n".join([*stderr, *(str(w.message) for w in caught)])
    if text.strip():
        DECODER_MESSAGES.record(path, text)
