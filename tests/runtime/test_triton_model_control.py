"""Triton's model control as `clipedge serve` asks it: the answer or refusal comes back; a server that dies
mid-call, or a stop, ends the wait within a poll; a Triton that never answers is reported as stuck."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.triton.model_control import CONTROL_HEADER, POLL_SECONDS, ControlAbandoned, ModelControl, NoAnswer

TOKEN = "secret"


class Repository(BaseHTTPRequestHandler):
    """Triton's repository API in miniature: ``good`` loads, ``bad`` is refused as Triton refuses, no header → 403."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get(CONTROL_HEADER) != TOKEN:
            status, body = 403, {"error": "This API is restricted"}
        elif self.path == "/v2/repository/models/good/load":
            status, body = 200, {}
        else:
            status, body = 400, {"error": "failed to load 'bad', failed to initialize stub"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def repository():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Repository)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def never() -> None:
    return None


def test_an_answer_returns_and_a_refusal_carries_tritons_words(repository):
    control = ModelControl("127.0.0.1", repository, TOKEN)
    control.call("good", "load", 5, never)
    with pytest.raises(ClipedgeError, match=r"^tritonserver: load of model bad failed \(400: failed to load 'bad', "
                                            r"failed to initialize stub\)$") as refused:
        control.call("bad", "load", 5, never)
    assert not isinstance(refused.value, ControlAbandoned)
    with pytest.raises(ClipedgeError, match=r"\(403: This API is restricted\)"):
        ModelControl("127.0.0.1", repository, "wrong").call("good", "load", 5, never)


SERVER_THAT_DIES_MID_LOAD = textwrap.dedent("""
    import socket, subprocess, sys
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print(listener.getsockname()[1], flush=True)
    connection, _ = listener.accept()
    connection.recv(65536)
    # as Triton forks a model's stub during a load: the child inherits the request's connection
    subprocess.Popen(["sleep", "30"], pass_fds=[connection.fileno()])
    sys.exit(1)
""")


@pytest.fixture
def dying_server():
    """Start servers that die mid-load as Triton can, each in its own process group; kill the groups after."""
    started: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, int]:
        process = subprocess.Popen([sys.executable, "-c", SERVER_THAT_DIES_MID_LOAD], stdout=subprocess.PIPE, text=True,
                                   start_new_session=True)
        started.append(process)
        return process, int(process.stdout.readline())

    yield start
    for process in started:
        subprocess.run(["pkill", "-KILL", "-g", str(process.pid)], check=False)
        process.wait(5)
        process.stdout.close()


def test_a_plain_blocking_call_waits_out_its_timeout_when_a_child_holds_the_dead_servers_connection(dying_server):
    """Why ModelControl exists: the failure mode itself, shown with urllib."""
    process, port = dying_server()
    began = time.monotonic()
    with pytest.raises(OSError):
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/models/m/load", b"{}"),
                               timeout=2)
    assert time.monotonic() - began >= 1.9 and process.wait(5) == 1


def test_a_server_that_dies_mid_call_while_a_child_holds_the_connection_is_given_up_within_a_poll(dying_server):
    process, port = dying_server()
    ended = lambda: None if process.poll() is None else f"tritonserver exited with status {process.returncode}"  # noqa: E731
    began = time.monotonic()
    with pytest.raises(ControlAbandoned, match=r"^tritonserver: load of model m given up \(tritonserver exited with "
                                               r"status 1\)$") as abandoned:
        ModelControl("127.0.0.1", port, TOKEN).call("m", "load", 60, ended)
    assert not isinstance(abandoned.value, NoAnswer)
    assert time.monotonic() - began < 3
    assert no_worker_left()


def no_worker_left(seconds: float = 2.0) -> bool:
    """Every call's worker thread (named triton-ACTION-MODEL) has ended: a call given up leaks nothing."""
    deadline = time.monotonic() + seconds
    while any(thread.name.startswith("triton-") for thread in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def silent_port():
    """A server that accepts and reads a request but never answers: Triton with a model stuck LOADING."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    closed = threading.Event()

    def hold() -> None:
        connection, _ = listener.accept()
        held.append(connection)
        try:
            while connection.recv(65536):  # the request, then nothing until the client shuts the connection down
                pass
            closed.set()
        except OSError:
            pass

    threading.Thread(target=hold, daemon=True).start()
    yield listener.getsockname()[1], closed
    for connection in held:
        connection.shutdown(socket.SHUT_RDWR)
        connection.close()
    listener.close()


def test_a_stop_ends_the_wait_within_a_poll_and_closes_the_connection(silent_port):
    port, closed = silent_port
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(ControlAbandoned, match=r"given up \(clipedge serve is stopping\)$"):
        ModelControl("127.0.0.1", port, TOKEN).call("m", "unload", 60,
                                                    lambda: "clipedge serve is stopping" if stop.is_set() else None)
    assert time.monotonic() - began < 0.3 + POLL_SECONDS + 1.0  # a poll, plus room for a loaded 2-core machine
    assert closed.wait(2), "the abandoned request's connection was left open"
    assert no_worker_left()


def test_no_answer_within_the_deadline_means_triton_is_stuck(silent_port):
    port, closed = silent_port
    began = time.monotonic()
    with pytest.raises(NoAnswer, match=r"^tritonserver: load of model m had no answer within 1 s$"):
        ModelControl("127.0.0.1", port, TOKEN).call("m", "load", 1, never)
    assert 1 <= time.monotonic() - began < 1 + POLL_SECONDS + 1.0
    assert closed.wait(2)
    assert no_worker_left()


def test_a_surprise_in_the_worker_is_the_calls_answer_not_a_stuck_triton(repository, monkeypatch):
    def surprise(self):
        raise RuntimeError("an error nobody expected")

    monkeypatch.setattr(http.client.HTTPConnection, "getresponse", surprise)
    began = time.monotonic()
    with pytest.raises(ClipedgeError, match=r"load of model good failed \(an error nobody expected\)$") as failed:
        ModelControl("127.0.0.1", repository, TOKEN).call("good", "load", 30, never)
    assert not isinstance(failed.value, ControlAbandoned) and time.monotonic() - began < 2


def test_a_port_nobody_listens_on_is_refused_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        began = time.monotonic()
        with pytest.raises(ClipedgeError, match=r"^tritonserver: unload of model m failed \(.*refused"):
            ModelControl("127.0.0.1", port, TOKEN).call("m", "unload", 30, never)
        assert time.monotonic() - began < 1
