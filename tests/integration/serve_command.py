"""A `clipedge serve` process on given ports, its log and readiness, and clients that load it: what the fault tests
drive and watch."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http
from serve_processes import HOST, descendants, tritonserver_of, wait_until, workspace_of


class Served:
    """A ``clipedge serve`` process on given ports, its log, and ways to talk to it."""

    def __init__(self, model: Path, ports: list[int], log: Path, *options: str):
        self.http_port, self.grpc_port, self.metrics_port = ports
        self.log = log
        clipedge_command = Path(sys.executable).with_name("clipedge")
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [str(clipedge_command), "serve", str(model), "--host", HOST, "--http-port", str(self.http_port),
                 "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--name", "tiny",
                 "--max-batch", "8", "--max-queue-delay-us", "2000", "--threads", "1", *options],
                stdout=output, stderr=subprocess.STDOUT)
        serving = lambda: "SIGTERM stops it" in self.log.read_text()  # noqa: E731 - serve's start() has returned
        assert wait_until(lambda: self.process.poll() is not None or serving(), 180, 0.2) is not None
        assert self.process.poll() is None and self.ready(), self.log.read_text()

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def ready(self, path: str = "/v2/health/ready") -> bool:
        try:
            with urllib.request.urlopen(self.http + path, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def model_ready(self) -> bool:
        return self.ready("/v2/health/ready") and self.ready("/v2/models/tiny/ready")

    def everything(self) -> tuple[set[int], Path]:
        """Every process below the command (server, stubs, watchdog) and the scratch folder, for later checks."""
        return descendants(self.process.pid), workspace_of(tritonserver_of(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


class Load:
    """``threads`` clients sending requests of one frame to ``tiny`` until stopped; answers and errors recorded."""

    def __init__(self, served: Served, frame: np.ndarray, threads: int = 4):
        self.frame, self.stopped = frame, threading.Event()
        self.answers: list[np.ndarray] = []
        self.errors: list[str] = []
        self.finished: list[float] = []
        self.threads = [threading.Thread(target=self._send, args=(served,)) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _send(self, served: Served) -> None:
        client = triton_http.InferenceServerClient(f"{HOST}:{served.http_port}", connection_timeout=5,
                                                   network_timeout=15)
        request = triton_http.InferInput("images", list(self.frame.shape), "UINT8")
        request.set_data_from_numpy(self.frame)
        while not self.stopped.is_set():
            try:
                self.answers.append(client.infer("tiny", [request]).as_numpy("probs"))
            except Exception as error:  # noqa: BLE001 - every failure is recorded and judged by the test
                self.errors.append(str(error))
                time.sleep(0.02)
        self.finished.append(time.monotonic())
        client.close()

    def join(self, seconds: float = 20) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(seconds)
        assert not any(thread.is_alive() for thread in self.threads), "a client hung"
