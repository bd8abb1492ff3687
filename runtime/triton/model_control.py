"""Triton's model control (load, unload) asked so that the supervisor is never stuck in the call.

A load is a long HTTP request: Triton answers once the model is ready. While it runs, Triton forks the
python-backend stub, and its accepted sockets are not close-on-exec, so the new stub inherits the very
connection the request came on (seen in ``/proc/STUB/fd``: the stub holds it in CLOSE-WAIT). When
tritonserver dies in the middle of a load, that connection therefore stays open and a plain blocking call
waits out its whole timeout, while nothing restarts the server and SIGTERM goes unanswered. So the request
runs on a worker thread and the caller polls, every ``POLL_SECONDS``, a question of its own ("has the
server ended? is serve stopping?"); on an answer, or past the deadline, the connection is shut down, which
also ends the worker's read.
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
        (Triton's 4xx/5xx, a reset connection) is a :class:`ClipedgeError` with Triton's own words."""
        # the socket's own timeout is a backstop only: the deadline below comes first and shuts the connection
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout + SOCKET_GRACE_SECONDS)
        answers: queue.Queue[tuple[int | None, str]] = queue.Queue(maxsize=1)
        worker = threading.Thread(target=self._send, args=(connection, model, action, answers), daemon=True,
                                  name=f"triton-{action}-{model}")
        worker.start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    status, detail = answers.get(timeout=POLL_SECONDS)
                    break
                except queue.Empty:
                    reason = abandon()
                    if reason is not None:
                        raise ControlAbandoned(f"tritonserver: {action} of model {model} given up ({reason})") from None
                    if time.monotonic() > deadline:
                        raise NoAnswer(f"tritonserver: {action} of model {model} had no answer within {timeout:.0f} s") from None
        finally:
            _shut(connection)
            worker.join(POLL_SECONDS)
        if status != 200:
            prefix = f"{status}: " if status is not None else ""
            raise ClipedgeError(f"tritonserver: {action} of model {model} failed "
                                f"({prefix}{' '.join(detail.split())[:300]})")

    def _send(self, connection: http.client.HTTPConnection, model: str, action: str,
              answers: queue.Queue[tuple[int | None, str]]) -> None:
        try:
            connection.request("POST", f"/v2/repository/models/{model}/{action}", b"{}", {CONTROL_HEADER: self._token})
            response = connection.getresponse()
            answers.put((response.status, _triton_error(response.read().decode(errors="replace"))))
        except (OSError, http.client.HTTPException) as error:
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
