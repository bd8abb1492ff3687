"""The processes behind ``clipedge serve``: a parent-death signal, how a process ended, and the model stubs.

Triton's python backend runs every model instance in its own ``triton_python_backend_stub`` process, a
child of tritonserver whose command line names the model's ``model.py`` (``REPO/NAME/1/model.py``). When a
stub dies, Triton 2.51 keeps answering ready for its model and fails every request ("Stub process ... is not
healthy"), so the supervisor watches the stubs itself: their pids are learned once per load (one scan of
/proc) and then only those pids are checked, two small file reads per poll. A dead stub stays a zombie until
tritonserver reaps it; /proc then still holds its wait status (``stat`` field 52), which says how it died.
Linux only, as tritonserver is.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STUB_PROGRAM = "triton_python_backend_stub"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: ``/proc/PID/stat`` after the command name: state is field 3 of the whole line, ppid 4, exit_code 52
STATE_FIELD, PPID_FIELD, EXIT_CODE_FIELD = 0, 1, 49


def parent_death_signal(parent: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread that started it dies, however it
    dies (``kill -9`` included); a child whose parent is already gone exits at once."""
    parent = os.getpid() if parent is None else parent

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(1)

    return arm


def describe_exit(returncode: int) -> str:
    """A Popen return code in words: "was killed by signal SIGABRT (6)" or "exited with status 1"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {name} ({-returncode})"
    return f"exited with status {returncode}"


@dataclass(frozen=True)
class ProcessStatus:
    """One process as /proc shows it: its parent, whether it still runs, and a zombie's wait status."""

    ppid: int
    zombie: bool
    wait_status: int | None


def process_status(pid: int) -> ProcessStatus | None:
    """None once the process is gone (reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    zombie = fields[STATE_FIELD] in ("Z", "X")
    status = int(fields[EXIT_CODE_FIELD]) if zombie and len(fields) > EXIT_CODE_FIELD else None
    return ProcessStatus(int(fields[PPID_FIELD]), zombie, status)


def stubs_of(server_pid: int) -> dict[int, str]:
    """tritonserver's live python-backend stubs: pid → the model each runs (from its ``model.py`` argument)."""
    stubs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        status = process_status(int(entry.name))
        if status is None or status.ppid != server_pid or status.zombie:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(STUB_PROGRAM.encode()):
            stubs[int(entry.name)] = Path(os.fsdecode(argv[1])).parents[1].name
    return stubs


def stub_death(pid: int, server_pid: int) -> str | None:
    """None while the stub runs; else how it ended, in words."""
    status = process_status(pid)
    if status is not None and status.ppid == server_pid and not status.zombie:
        return None
    if status is not None and status.zombie and status.wait_status is not None:
        return describe_exit(os.waitstatus_to_exitcode(status.wait_status))
    return "is gone"


def remove_shared_memory(prefix: str) -> None:
    """Unlink the python backend's /dev/shm regions of one server (a killed tritonserver leaves them behind)."""
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
