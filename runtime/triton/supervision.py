"""``clipedge serve`` as a supervisor: tritonserver and its model stubs are watched, restored, or reported.

Every ``POLL_SECONDS`` the command checks two things. **tritonserver ended** (a crash: one HTTP request can
make Triton 2.51 abort, see the docs): it is restarted on the same ports after a back-off of 1, 2, 4 ... s
(at most 30 s), each restart logged with what ended it (the signal or exit status, and where its output was
kept). **A model's python-backend stub died** (Triton would keep reporting the model ready and fail every
request): the model is unloaded through Triton's model control at once, so ``/v2/health/ready`` and the
model's ready endpoint answer false within a second, then loaded again, logged. A Triton that does not
answer the unload or the load in time (a model stuck LOADING), or refuses the unload while alive, is
restarted like a crashed one, and the calls give up at once when the server ends or serve is told to stop
(``model_control.py``). What an adaptable model says
about its class bank (a swap, a refused bank) is relayed from Triton's log (``bank_reports.py``). Each kind of
recovery is allowed ``restarts`` times in any ``RESTART_WINDOW_SECONDS``; past that, or with ``restarts=0``, the
command stops everything and raises :class:`~.server.ServerDied`, which the CLI turns into exit status
``SERVER_DIED_EXIT`` (3), distinct from a user error (2), with a message naming what died and how.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable

from clipedge.core.errors import ClipedgeError

from .bank_reports import REFUSED, BankReports
from .model_control import NoAnswer
from .processes import describe_exit
from .server import ServerDied, TritonServer
from .serving import ENCODED_SUFFIX

log = logging.getLogger(__name__)
DEFAULT_RESTARTS = 3
RESTART_WINDOW_SECONDS = 300
MAX_BACKOFF_SECONDS = 30
#: how often the server and its stubs are checked: a dead stub's model is unready well within a second
POLL_SECONDS = 0.1
#: how long a failed model-control call waits for a dying server to be seen dead (it closes its sockets first)
SETTLE_SECONDS = 1.0


class RestartBudget:
    """At most ``limit`` recoveries in any ``window`` seconds; the n-th recent one waits 2**(n-1) s first."""

    def __init__(self, limit: int, window: float = RESTART_WINDOW_SECONDS):
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()

    def take(self) -> int | None:
        """The number of this recovery among the recent ones, or None when the budget is spent."""
        now = time.monotonic()
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return None
        self._times.append(now)
        return len(self._times)

    def spent(self, cause: str) -> ServerDied:
        if not self.limit:
            return ServerDied(f"{cause}; not restarted (--restarts 0)")
        return ServerDied(f"{cause}; already restored {self.limit} time(s) in the last {self.window / 60:.0f} "
                          "minutes, giving up")

    @staticmethod
    def backoff(attempt: int) -> float:
        return float(min(2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def serve_forever(server: TritonServer, restarts: int = DEFAULT_RESTARTS, echo: Callable[[str], object] = print) -> None:
    """Run until SIGTERM or Ctrl-C, restoring a crashed server or a dead model stub within ``restarts``; then
    stop cleanly. Raises :class:`ServerDied` when a death is not restored."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    crashes, reloads = RestartBudget(restarts), RestartBudget(restarts)
    try:
        try:
            server.start(stop=stop)
        except ClipedgeError:
            if stop.is_set():
                return  # SIGTERM or Ctrl-C during the start: a clean stop, not an error
            raise
        echo(f"serving {server.name} ({server.served.model}) through Triton Inference Server:")
        echo(f"  {server.grpc_url}   {server.http_url}   (and {server.name}{ENCODED_SUFFIX} for JPEG/PNG bytes)")
        echo(f"  metrics http://{server.options.host}:{server.options.metrics_port}/metrics; Ctrl-C or SIGTERM stops it")
        reports = BankReports()
        while not stop.wait(POLL_SECONDS):
            for line in reports.new_lines(server.log_path):
                (log.warning if REFUSED in line else log.info)(line)
            status = server.exit_status()
            if status is not None:
                _restart_server(server, f"tritonserver (pid {server.process.pid}) {describe_exit(status)}"
                                f"{_kept_output(server)}", crashes, stop)
                continue
            for model, how in server.dead_stubs().items():
                stuck = _restore_model(server, model, f"model {model}: {how}", reloads, stop)
                if stuck is not None:
                    _restart_server(server, f"{stuck}{_kept_output(server)}", crashes, stop)
                if stuck is not None or stop.is_set() or server.exit_status() is not None:
                    break  # every other model comes back with the restarted server, or not at all
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _kept_output(server: TritonServer) -> str:
    """Where the server's output was kept for a post-mortem, as a clause of the log line ("" if nowhere)."""
    kept = server.keep_log()
    return f"; its output is kept in {kept}" if kept else ""


def _restart_server(server: TritonServer, cause: str, budget: RestartBudget, stop: threading.Event) -> None:
    while not stop.is_set():
        attempt = budget.take()
        if attempt is None:
            raise budget.spent(cause)
        delay = budget.backoff(attempt)
        log.warning("%s; restarting it in %.0f s (restart %d of at most %d in %d min)", cause, delay, attempt,
                    budget.limit, budget.window / 60)
        server.stop()
        if stop.wait(delay):
            return
        try:
            server.start(stop=stop)
        except (ClipedgeError, ServerDied) as error:
            cause = f"tritonserver did not come back ({error})"
            continue
        log.warning("tritonserver restarted on the same ports; %s is ready again", server.name)
        return


def _restore_model(server: TritonServer, model: str, cause: str, budget: RestartBudget,
                   stop: threading.Event) -> str | None:
    """Unload first (readiness false at once), then load again, as long as the budget allows. Returns why the
    server itself must be restarted (Triton did not answer in time, or refused to unload while alive), else
    None; a server that ends meanwhile is left to the next poll, which restarts it."""
    try:
        server.unload(model, stop)
    except NoAnswer as error:
        return f"{cause}; {error}"
    except ClipedgeError as error:
        if stop.is_set() or server.ended(SETTLE_SECONDS):
            return None
        return f"{cause}; {error}"  # a live Triton that will not unload: only a restart brings the model back
    while not stop.is_set():
        attempt = budget.take()
        if attempt is None:
            raise budget.spent(cause)
        log.warning("%s; unloaded (not ready), reloading it (reload %d of at most %d in %d min)", cause, attempt,
                    budget.limit, budget.window / 60)
        try:
            server.load(model, stop)
        except NoAnswer as error:
            return f"{cause}; {error}"
        except ClipedgeError as error:
            if stop.is_set() or server.ended(SETTLE_SECONDS):
                return None  # serve is stopping, or the server died: the next poll restarts it, every model with it
            cause = f"model {model}: reload failed ({error})"
            if stop.wait(budget.backoff(attempt)):
                return None
            continue
        log.warning("model %s reloaded; ready again", model)
        return None
    return None
