"""`clipedge serve`'s supervisor, deciding on a scripted server: what it restores, what it restarts, what it gives
up on and when, and that a stop is a clean end. The real server's faults are in tests/integration/."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.triton.model_control import ControlAbandoned, NoAnswer
from clipedge.runtime.triton.server import ServerDied, TritonServer
from clipedge.runtime.triton.supervision import RestartBudget, serve_forever

STUB_KILLED = {"tiny": "its python backend stub (pid 7) was killed by signal SIGKILL (9)"}


def test_restart_budget_backs_off_and_is_bounded():
    budget = RestartBudget(3, window=60)
    assert [budget.take() for _ in range(4)] == [1, 2, 3, None]
    assert [budget.backoff(n) for n in (1, 2, 3, 9)] == [1, 2, 4, 30]
    assert "giving up" in str(budget.spent("tritonserver was killed"))
    assert "not restarted (--restarts 0)" in str(RestartBudget(0).spent("x"))
    assert RestartBudget(0).take() is None


class FakeServer:
    """What serve_forever asks of a TritonServer, scripted. ``lives``: the exit status of each server started in
    turn (None: it keeps running); ``dead``: the dead stubs each poll finds; ``unloads``/``loads``: each call's
    failure in turn, with the exit status the server has from then on (a server dying during the call)."""

    def __init__(self, lives: list[int | None], dead: list[dict[str, str]] = (),
                 unloads: list[tuple[Exception, int | None]] = (), loads: list[tuple[Exception, int | None]] = ()):
        self.lives, self.dead, self.unloads, self.loads = list(lives), list(dead), list(unloads), list(loads)
        self.status: int | None = None
        self.calls: list[str] = []
        self.name, self.process = "tiny", SimpleNamespace(pid=4242)
        self.served = SimpleNamespace(model=Path("model.onnx"))
        self.options = SimpleNamespace(host="127.0.0.1", metrics_port=8002)
        self.grpc_url = self.http_url = "url"
        self.log_path = None  # no Triton log: nothing for the bank relay to read

    def start(self, stop: object = None) -> None:
        self.calls.append("start")
        self.status = self.lives.pop(0) if self.lives else None

    def stop(self) -> None:
        self.calls.append("stop")

    def exit_status(self) -> int | None:
        return self.status

    def ended(self, grace: float = 0.0) -> bool:
        return self.status is not None

    def keep_log(self) -> None:
        return None

    def dead_stubs(self) -> dict[str, str]:
        return self.dead.pop(0) if self.dead else {}

    def unload(self, model: str, stop: object = None) -> None:
        self.calls.append(f"unload {model}")
        self._scripted(self.unloads)

    def load(self, model: str, stop: object = None) -> None:
        self.calls.append(f"load {model}")
        self._scripted(self.loads)

    def _scripted(self, failures: list[tuple[Exception, int | None]]) -> None:
        if failures:
            error, self.status = failures.pop(0)
            raise error


def test_a_dead_stub_is_unloaded_then_reloaded_or_ends_the_command():
    server = FakeServer([None], [STUB_KILLED])
    with pytest.raises(ServerDied, match=r"^model tiny: its python backend stub \(pid 7\) was killed by signal SIGKILL "
                                         r"\(9\); not restarted \(--restarts 0\)$"):
        serve_forever(server, restarts=0, echo=lambda _: None)
    assert server.calls == ["start", "unload tiny", "stop"]  # unready first, then everything stopped


def test_a_crashed_server_is_restarted_within_its_budget_then_reported():
    server = FakeServer([-6, -6])
    with pytest.raises(ServerDied, match=r"^tritonserver \(pid 4242\) was killed by signal SIGABRT \(6\); already "
                                         r"restored 1 time\(s\) in the last 5 minutes, giving up$"):
        serve_forever(server, restarts=1, echo=lambda _: None)
    assert server.calls == ["start", "stop", "start", "stop"]


@pytest.mark.parametrize("step, failure, said", [
    ("load", NoAnswer("tritonserver: load of model tiny had no answer within 30 s"),
     "tritonserver: load of model tiny had no answer within 30 s"),
    ("unload", NoAnswer("tritonserver: unload of model tiny had no answer within 10 s"),
     "tritonserver: unload of model tiny had no answer within 10 s"),
    ("unload", ClipedgeError("tritonserver: unload of model tiny failed (400: model busy)"),
     "tritonserver: unload of model tiny failed (400: model busy)"),
])
def test_a_triton_stuck_or_refusing_while_alive_is_restarted_like_a_crashed_one(caplog, step, failure, said):
    server = FakeServer([None, -6], [STUB_KILLED], **{f"{step}s": [(failure, None)]})
    with pytest.raises(ServerDied, match=r"^tritonserver \(pid 4242\) was killed by signal SIGABRT \(6\); already "
                                         r"restored 1 time\(s\)"):  # the stuck Triton spent the one restart allowed
        serve_forever(server, restarts=1, echo=lambda _: None)
    steps = ["unload tiny", "load tiny"] if step == "load" else ["unload tiny"]
    assert server.calls == ["start", *steps, "stop", "start", "stop"]
    assert (f"model tiny: its python backend stub (pid 7) was killed by signal SIGKILL (9); {said}; restarting it in "
            "1 s (restart 1 of at most 1 in 5 min)") in caplog.messages


@pytest.mark.parametrize("step", ["unload", "load"])
def test_a_call_failed_because_tritonserver_died_is_not_retried_the_next_poll_restarts_the_server(caplog, step):
    died = ControlAbandoned(f"tritonserver: {step} of model tiny given up (tritonserver was killed by signal "
                            "SIGABRT (6))")
    server = FakeServer([None, -6], [STUB_KILLED], **{f"{step}s": [(died, -6)]})
    with pytest.raises(ServerDied, match=r"^tritonserver \(pid 4242\) was killed by signal SIGABRT \(6\); already "
                                         r"restored 1 time\(s\)"):
        serve_forever(server, restarts=1, echo=lambda _: None)
    steps = ["unload tiny", "load tiny"] if step == "load" else ["unload tiny"]
    assert server.calls == ["start", *steps, "stop", "start", "stop"]
    assert not any("reload failed" in message for message in caplog.messages)
    assert ("tritonserver (pid 4242) was killed by signal SIGABRT (6); restarting it in 1 s (restart 1 of at most 1 "
            "in 5 min)") in caplog.messages


def test_a_refused_reload_on_a_live_server_is_retried_within_the_reload_budget():
    refused = ClipedgeError("tritonserver: load of model tiny failed (400: failed to initialize stub)")
    server = FakeServer([None], [STUB_KILLED], loads=[(refused, None), (refused, None)])
    with pytest.raises(ServerDied, match=r"^model tiny: reload failed \(tritonserver: load of model tiny failed \(400: "
                                         r"failed to initialize stub\)\); already restored 2 time\(s\)"):
        serve_forever(server, restarts=2, echo=lambda _: None)
    assert server.calls == ["start", "unload tiny", "load tiny", "load tiny", "stop"]


class StoppedDuringTheReload(FakeServer):
    """SIGTERM arrives while the load waits: the call gives up, as ModelControl does when serve is stopping."""

    def load(self, model: str, stop: object = None) -> None:
        self.calls.append(f"load {model}")
        signal.raise_signal(signal.SIGTERM)  # serve_forever's handler sets its stop event
        raise ControlAbandoned("tritonserver: load of model tiny given up (clipedge serve is stopping)")


def test_sigterm_during_a_reload_stops_the_command_cleanly():
    before = signal.getsignal(signal.SIGTERM)
    server = StoppedDuringTheReload([None], [STUB_KILLED])
    serve_forever(server, restarts=3, echo=lambda _: None)  # returns: exit status 0, no ServerDied
    assert server.calls == ["start", "unload tiny", "load tiny", "stop"]  # no retry, no server restart
    assert signal.getsignal(signal.SIGTERM) is before


class StoppedDuringTheStart(FakeServer):
    def start(self, stop: object = None) -> None:
        self.calls.append("start")
        signal.raise_signal(signal.SIGTERM)
        raise ClipedgeError("tritonserver: start given up (clipedge serve is stopping)")


def test_sigterm_during_the_first_start_is_a_clean_stop_not_an_error():
    server = StoppedDuringTheStart([None])
    serve_forever(server, restarts=3, echo=lambda _: None)  # returns: exit status 0
    assert server.calls == ["start", "stop"]


def test_the_wait_for_readiness_gives_up_as_soon_as_serve_is_stopping():
    """The real TritonServer's wait, on a running process whose ports nobody answers (Triton still loading)."""
    server = object.__new__(TritonServer)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        server.options = SimpleNamespace(host="127.0.0.1", http_port=probe.getsockname()[1])
    server.process = subprocess.Popen(["sleep", "30"])
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    try:
        with pytest.raises(ClipedgeError, match=r"^tritonserver: start given up \(clipedge serve is stopping\)$"):
            server._wait_ready(120, stop)
        assert time.monotonic() - began < 2
    finally:
        server.process.kill()
        server.process.wait()
