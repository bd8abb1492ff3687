"""The pieces of `clipedge serve` that need no tritonserver: exit descriptions, the parent-death signal, the cleanup
watchdog, the port probe, and image bytes decoded as their file. The supervisor's decisions are in
test_triton_supervision.py."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import UnreadableImage
from clipedge.runtime.preprocessing.transform import prepare_frame
from clipedge.runtime.triton import watchdog
from clipedge.runtime.triton.processes import describe_exit, process_status, stub_death
from clipedge.runtime.triton.server import check_port_free


def gone(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = process_status(pid)
        if status is None or status.zombie:
            return True
        time.sleep(0.02)
    return False


def test_exits_are_described_by_signal_or_status():
    assert describe_exit(-6) == "was killed by signal SIGABRT (6)"
    assert describe_exit(-9) == "was killed by signal SIGKILL (9)"
    assert describe_exit(1) == "exited with status 1"


def test_a_zombie_tells_how_it_died():
    child = subprocess.Popen(["sleep", "30"])
    os.kill(child.pid, signal.SIGKILL)
    assert gone(child.pid)
    assert stub_death(child.pid, os.getpid()) == "was killed by signal SIGKILL (9)"  # a zombie until reaped
    child.wait()
    assert stub_death(child.pid, os.getpid()) == "is gone"


def test_parent_death_signal_kills_the_child_with_a_kill_9_of_its_parent(tmp_path):
    """A parent that starts `sleep` with the signal armed, then is SIGKILLed: the sleep dies with it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, time
        from clipedge.runtime.triton.processes import parent_death_signal
        child = subprocess.Popen(["sleep", "60"], preexec_fn=parent_death_signal())
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert not gone(child, 0.2)
    parent.kill()
    parent.wait()
    assert gone(child)


def test_watchdog_kills_its_groups_and_removes_shared_memory_and_folders_when_the_pipe_closes(tmp_path):
    prefix = f"clipedge_test_{os.getpid()}_"
    region = Path("/dev/shm") / f"{prefix}region"
    region.write_bytes(b"x")
    folder = tmp_path / "scratch"
    (folder / "models").mkdir(parents=True)
    group = subprocess.Popen(["sleep", "60"], start_new_session=True)
    guard = subprocess.Popen([sys.executable, "-I", watchdog.__file__, prefix], stdin=subprocess.PIPE, text=True)
    guard.stdin.write(f"group {group.pid}\npath {folder}\n")
    guard.stdin.flush()
    time.sleep(0.2)
    assert group.poll() is None and region.exists()
    guard.stdin.close()  # as the death of clipedge serve closes it
    guard.wait(10)
    assert group.wait(5) == -signal.SIGKILL
    assert not region.exists() and not folder.exists()


def test_port_probe_allows_time_wait_but_refuses_a_listener():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds its ports
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        with pytest.raises(ClipedgeError, match="--http-port .*cannot listen"):
            check_port_free("127.0.0.1", port, "--http-port")
        accepted.close()  # the server side closes first: its port is left in TIME_WAIT
        client.close()
    check_port_free("127.0.0.1", port, "--http-port")


def test_image_bytes_decode_exactly_as_their_file(tmp_path):
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for name in ("a.jpg", "a.png"):
        path = tmp_path / name
        picture.save(path)
        for quality in ("fast", "exact"):
            assert np.array_equal(prepare_frame(path, 32, quality=quality),
                                  prepare_frame(path.read_bytes(), 32, quality=quality))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG")
    assert np.array_equal(prepare_frame(bytearray(buffer.getvalue()), 32), prepare_frame(buffer.getvalue(), 32))
    with pytest.raises(UnreadableImage, match="<bytes>.*not-an-image"):
        prepare_frame(b"%PDF-1.4 not an image", 32)
    with pytest.raises(UnreadableImage, match="<bytes>.*empty"):
        prepare_frame(b"", 32)
