"""Triton's model control (load, unload) asked so that the supervisor is never stuck in the call.

A load is a long HTTP request: Triton answers once the model is ready. While it runs, Triton forks the
python-backend stub, and its accepted sockets are not close-on-exec, so the new stub inherits the very
connection the request came on (seen in ``/proc/STUB/fd``: the stub holds it in CLOSE-WAIT). When
tritonserver dies in the middle of a load, that connection therefore stays open and a plain blocking call
waits out its whole timeout, while nothing restarts the server and SIGTERM goes unanswered. So the caller
sends the request, a worker thread waits for the answer, and the caller polls, every ``POLL_SECONDS``, a
question of its own ("has the server ended? is serve stopping?"); on an answer, or past the deadline, the
connection is shut down, which also ends the worker's read.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable

from clipedge.core.errors import ClipedgeError

#: the header Triton's repository API (load/unload) is restricted to
CONTROL_HEADER = "clipedge-control"
POLL_SECONDS = 0.1
SOCKET_GRACE_SECONDS = 5
#: connecting is instant on a live server's loopback port; only a full accept queue would take longer
CONNECT_SECONDS = 2


class ControlAbandoned(ClipedgeError):
    """The call was given up: the server ended, serve is stopping, or Triton did not answer in time."""


class NoAnswer(ControlAbandoned):
    """Triton is alive but did not answer within the deadline: it is stuck (a model left LOADING or UNLOADING)."""


class ModelControl:
    """The restricted repository API of one tritonserver: ``load``/``unload`` of a model, by name."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self._token = host, port, token

    def call(self, model: str, action: str, timeout: float, abandon: Callable[[], str | None]) -> None:
        """POST ``/v2/repository/models/MODEL/ACTION`` and wait for Triton's answer, unless ``abandon()`` gives a
        reason first (:class:`ControlAbandoned`) or ``timeout`` seconds pass (:class:`NoAnswer`). A refusal
        (Triton's 4xx/5xx, a reset connection) is a :class:`ClipedgeError` with Triton's own words.

        The request is sent from this thread, and only the wait for the answer runs on the worker, so nothing
        can reach Triton after the call has given up (a late unload could otherwise hit a restarted server)."""
        what = f"tritonserver: {action} of model {model}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_SECONDS)
        connection.auto_open = 0  # never reconnect behind our back once the connection is shut
        try:
            connection.connect()
            connection.request("POST", f"/v2/repository/models/{model}/{action}", b"{}", {CONTROL_HEADER: self._token})
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise ClipedgeError(f"{what} failed ({error or type(error).__name__})") from None
        # the socket's own timeout is a backstop only: the deadline below comes first and shuts the connection
        connection.sock.settimeout(timeout + SOCKET_GRACE_SECONDS)
        answers: queue.Queue[tuple[int | None, str]] = queue.Queue(maxsize=1)
        worker = threading.Thread(target=_receive, args=(connection, answers), daemon=True,
                                  name=f"triton-{action}-{model}")
        worker.start()
        deadline = time.monotonic() + timeout
        try:
            status, detail = self._wait(answers, deadline, abandon, what, timeout)
        finally:
            _shut(connection)
            worker.join(POLL_SECONDS)
        if status != 200:
            prefix = f"{status}: " if status is not None else ""
            raise ClipedgeError(f"{what} failed ({prefix}{' '.join(detail.split())[:300]})")

    @staticmethod
    def _wait(answers: queue.Queue[tuple[int | None, str]], deadline: float, abandon: Callable[[], str | None],
              what: str, timeout: float) -> tuple[int | None, str]:
        while True:
            try:
                return answers.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
            reason = abandon()
            if reason is None and time.monotonic() <= deadline:
                continue
            try:
                return answers.get_nowait()  # an answer that came just as we gave up still counts
            except queue.Empty:
                pass
            if reason is not None:
                raise ControlAbandoned(f"{what} given up ({reason})")
            raise NoAnswer(f"{what} had no answer within {timeout:.0f} s")


def _receive(connection: http.client.HTTPConnection, answers: queue.Queue[tuple[int | None, str]]) -> None:
    """The worker: Triton's answer, or why there is none; always exactly one item, so the caller never waits on a
    worker that died of a surprise."""
    try:
        response = connection.getresponse()
        answers.put((response.status, _triton_error(response.read().decode(errors="replace"))))
    except BaseException as error:  # noqa: BLE001 - anything the read raises is the call's answer
        answers.put((None, str(error) or type(error).__name__))


def _triton_error(body: str) -> str:
    """Triton's ``{"error": "..."}`` as its message; any other body as it is."""
    try:
        return str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        return body


def _shut(connection: http.client.HTTPConnection) -> None:
    """Close the connection, waking a worker still blocked reading it (close alone would not)."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    connection.close()
