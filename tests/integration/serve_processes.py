"""Processes and ports for the `clipedge serve` tests: free loopback ports, the process tree from /proc, what a
server leaves behind (shared memory, its scratch folder, kept logs), and waiting for a condition."""

from __future__ import annotations

import socket
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cmdline(pid: int) -> list[str]:
    try:
        return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except OSError:
        return []


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := parent_of(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def time_wait_on(port: int) -> int:
    """How many TCP connections on a local ``port`` are in TIME_WAIT (what blocked a restart without SO_REUSEADDR)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += int(local.rsplit(":", 1)[1], 16) == port and state == "06"
    return count


def tritonserver_of(serve_pid: int) -> int:
    [server] = [pid for pid in descendants(serve_pid) if alive(pid) and cmdline(pid)[0].endswith("bin/tritonserver")]
    return server


def stub_of(server_pid: int, model: str) -> int:
    [stub] = [pid for pid in descendants(server_pid) if alive(pid) and len(cmdline(pid)) > 1
              and cmdline(pid)[0].endswith("triton_python_backend_stub") and f"/models/{model}/1/" in cmdline(pid)[1]]
    return stub


def workspace_of(server_pid: int) -> Path:
    [repository] = [arg.split("=", 1)[1] for arg in cmdline(server_pid) if arg.startswith("--model-repository=")]
    return Path(repository).parent


def shared_memory(serve_pid: int) -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"clipedge_{serve_pid}_*")}


def wait_until(condition, seconds: float, step: float = 0.02) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``seconds``."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if condition():
            return time.monotonic() - began
        time.sleep(step)
    return None


def kept_logs(text: str) -> list[Path]:
    """The crashed servers' output that the command kept for a post-mortem, as its messages name them."""
    return [Path(part.split(";")[0].strip()) for part in text.split("its output is kept in ")[1:]]


def assert_nothing_left(serve_pid: int, pids: set[int], workspace: Path, seconds: float = 3.0) -> None:
    left = lambda: [pid for pid in pids if alive(pid)]  # noqa: E731
    assert wait_until(lambda: not left(), seconds) is not None, [(pid, cmdline(pid)[:1]) for pid in left()]
    assert not shared_memory(serve_pid), "python backend shared memory left in /dev/shm"
    assert wait_until(lambda: not workspace.exists(), seconds) is not None, f"scratch repository {workspace} left"
