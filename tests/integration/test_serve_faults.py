"""`clipedge serve` under faults, on loopback: what kills Triton, a stub or the command itself, and what is left.

One supervised server (``--restarts 3``) serves the first tests in file order: the encoded twin against the
runtime on photographs, a short soak of the twin, the stub killed under load (readiness false within a second,
then the model reloaded), the oversized-shape request that aborts tritonserver 2.51 (restarted), and SIGTERM
under load. Then an immediate restart on its ports, ``kill -9`` of that one, and a second server without
restarts whose tritonserver is SIGKILLed (exit status 3, the signal named). Five tritonserver starts in all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from click.testing import CliRunner
from conftest import write_image_folder
from PIL import Image
from serve_processes import alive, cmdline, descendants, free_ports, time_wait_on

import clipedge
from clipedge.cli import main
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.triton.server import SERVER_DIED_EXIT, SHUTDOWN_SECONDS

pytestmark = pytest.mark.integration
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs")

HOST = "127.0.0.1"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")  # camera is grayscale
OVERSIZED = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [9223372036854775807, 64, 64, 3], "data": [1]}]}


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


# --- a served model ----------------------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    data = write_image_folder(root / "data", per_class=8)
    run = root / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=4, views=1,
                   progress=False)
    return export_model(run, root / "model.onnx", parity_count=4, progress=False).artifact


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> list[Path]:
    """The suite's real photographs as JPEG (baseline, progressive, low quality, EXIF-rotated) and PNG (RGB, grey,
    RGBA, palette) files: what a camera or a client sends."""
    root = tmp_path_factory.mktemp("photos")
    files = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage_data, name)())
        rgb = image.convert("RGB")
        variants = {"q95.jpg": (rgb, {"quality": 95}), "progressive.jpg": (rgb, {"quality": 80, "progressive": True}),
                    "q40.jpg": (rgb, {"quality": 40, "subsampling": 2}), "rgb.png": (rgb, {}),
                    "grey.png": (rgb.convert("L"), {}), "rgba.png": (rgb.convert("RGBA"), {}),
                    "palette.png": (rgb.convert("P"), {})}
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated 90°: decoded upright when the model's training was
        variants["exif.jpg"] = (rgb, {"quality": 90, "exif": exif.tobytes()})
        for suffix, (picture, options) in variants.items():
            path = root / f"{name}-{suffix}"
            picture.save(path, **options)
            files.append(path)
    return files


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    server = Served(model, free_ports(3), tmp_path_factory.mktemp("serve-log") / "serve.log", "--restarts", "3")
    yield server
    server.stop()


def encoded_probs(served: Served, data: bytes) -> np.ndarray:
    client = triton_http.InferenceServerClient(f"{HOST}:{served.http_port}")
    request = triton_http.InferInput("images", [1, 1], "BYTES")
    request.set_data_from_numpy(np.array([[data]], dtype=object))
    try:
        return client.infer("tiny_encoded", [request]).as_numpy("probs")[0]
    finally:
        client.close()


# --- one decode path ---------------------------------------------------------------------------------------------


def test_encoded_twin_classifier_path_bytes_and_predict_give_identical_probabilities(served, model, photographs):
    local = Classifier(model, batch_size=1, threads=1, top_k=3)
    result = CliRunner().invoke(main, ["predict", str(model), *map(str, photographs), "--json", "--top-k", "3",
                                       "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    predicted = {entry["path"]: entry for entry in json.loads(result.stdout)["predictions"]}
    for path in photographs:
        data = path.read_bytes()
        by_path = local.infer(local.prepare(path)[0])["probs"][0]
        by_bytes = local.infer(local.prepare(data)[0])["probs"][0]
        twin = encoded_probs(served, data)
        assert np.array_equal(by_path, by_bytes), path.name
        assert np.abs(twin - by_path).max() == 0, path.name
        entry = predicted[str(path)]
        assert [by_path[i] for i in entry["indices"]] == pytest.approx(entry["scores"], abs=0), path.name


def test_short_soak_of_the_encoded_twin(served, photographs):
    """Four clients × 40 requests over the photographs: no error, every answer bit-identical to the first one."""
    files = [path.read_bytes() for path in photographs[::3]]
    reference = [encoded_probs(served, data) for data in files]
    failures: list[str] = []

    def send(offset: int) -> None:
        client = triton_http.InferenceServerClient(f"{HOST}:{served.http_port}")
        for step in range(40):
            index = (offset + step) % len(files)
            request = triton_http.InferInput("images", [1, 1], "BYTES")
            request.set_data_from_numpy(np.array([[files[index]]], dtype=object))
            try:
                if not np.array_equal(client.infer("tiny_encoded", [request]).as_numpy("probs")[0], reference[index]):
                    failures.append(f"request {step}: a different answer")
            except Exception as error:  # noqa: BLE001 - collected and asserted on below
                failures.append(str(error))
        client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]


# --- faults of the supervised server -----------------------------------------------------------------------------


def test_stub_killed_under_load_turns_readiness_false_within_a_second_then_the_model_is_reloaded(served):
    frame = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    server = tritonserver_of(served.process.pid)
    stub = stub_of(server, "tiny")
    load = Load(served, frame)
    try:
        assert wait_until(lambda: len(load.answers) >= 20, 30) is not None, load.errors[:3]
        expected = load.answers[0]
        os.kill(stub, signal.SIGKILL)
        unready = wait_until(lambda: not served.ready(), 5, 0.01)  # /v2/health/ready, what probes ask
        assert unready is not None and unready < 1.0, f"still ready {unready} s after the stub died"
        assert not served.ready("/v2/models/tiny/ready") or served.model_ready()  # unready, or already reloaded
        assert wait_until(served.model_ready, 60, 0.1) is not None, served.log.read_text()
        answered = len(load.answers)
        assert wait_until(lambda: len(load.answers) >= answered + 20, 30) is not None, load.errors[-3:]
    finally:
        load.join()
    assert served.process.poll() is None and tritonserver_of(served.process.pid) == server  # the model, not the server
    assert not alive(stub) and stub_of(server, "tiny") != stub
    assert all(np.array_equal(answer, expected) for answer in load.answers)
    assert all("\n" not in error for error in load.errors)
    text = served.log.read_text()
    assert f"stub (pid {stub}) was killed by signal SIGKILL (9)" in text and "model tiny reloaded; ready again" in text


def test_oversized_shape_request_aborts_tritonserver_and_the_command_restarts_it(served):
    old_server = tritonserver_of(served.process.pid)
    old_regions = shared_memory(served.process.pid)
    request = urllib.request.Request(f"{served.http}/v2/models/tiny/infer", json.dumps(OVERSIZED).encode())
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # Triton dies before it answers
        urllib.request.urlopen(request, timeout=10)
    assert wait_until(lambda: not alive(old_server), 5) is not None
    assert wait_until(served.model_ready, 90, 0.2) is not None, served.log.read_text()
    assert served.process.poll() is None
    assert tritonserver_of(served.process.pid) != old_server
    assert not old_regions & shared_memory(served.process.pid), "the dead server's shared memory was left"
    text = served.log.read_text()
    [kept] = kept_logs(text)
    assert kept.name == f"clipedge-tritonserver-{old_server}.log"
    assert "std::length_error" in kept.read_text()  # Triton's own abort, before the model sees the request
    kept.unlink()
    assert f"tritonserver (pid {old_server}) was killed by signal SIGABRT (6)" in text
    assert "restarting it in 1 s (restart 1 of at most 3" in text and "DCGM" not in text
    assert wait_until(lambda: "tritonserver restarted on the same ports" in served.log.read_text(), 5) is not None
    frame = np.zeros((1, 32, 32, 3), np.uint8)
    with Classifier(f"grpc://{HOST}:{served.grpc_port}/tiny") as remote:
        assert remote.infer(frame)["probs"].shape == (1, 3)


def test_sigterm_under_load_finishes_or_fails_clearly_within_the_drain_time(served):
    frame = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    pids, workspace = served.everything()
    load = Load(served, frame)
    assert wait_until(lambda: len(load.answers) >= 20, 30) is not None, load.errors[:3]
    began = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(SHUTDOWN_SECONDS + 5)
    stopped = time.monotonic() - began
    load.join()
    assert served.process.returncode == 0, served.log.read_text()
    assert stopped < SHUTDOWN_SECONDS + 2
    assert all(np.array_equal(answer, load.answers[0]) for answer in load.answers)
    assert all(error and "\n" not in error for error in load.errors), load.errors[:3]
    assert max(load.finished) - began < SHUTDOWN_SECONDS + 5
    assert_nothing_left(served.process.pid, pids, workspace)


# --- restart, kill -9, a server that dies ------------------------------------------------------------------------


def test_immediate_restart_on_the_same_ports_then_kill_9_leaves_nothing(served, model, tmp_path):
    assert served.process.poll() is not None, "runs after the SIGTERM test, on the ports it just released"
    assert time_wait_on(served.http_port), "the stopped server's connections should still be in TIME_WAIT"
    again = Served(model, [served.http_port, served.grpc_port, served.metrics_port], tmp_path / "again.log")
    try:
        assert again.model_ready()
        pids, workspace = again.everything()
        assert shared_memory(again.process.pid)
        again.process.send_signal(signal.SIGKILL)
        again.process.wait(5)
        assert_nothing_left(again.process.pid, pids, workspace)
    finally:
        again.stop()


def test_sigkill_of_tritonserver_without_restarts_exits_3_naming_the_signal(model, tmp_path):
    served = Served(model, free_ports(3), tmp_path / "serve.log", "--restarts", "0")
    try:
        pids, workspace = served.everything()
        server = tritonserver_of(served.process.pid)
        began = time.monotonic()
        os.kill(server, signal.SIGKILL)
        served.process.wait(10)
        assert time.monotonic() - began < 3
        assert served.process.returncode == SERVER_DIED_EXIT
        last = served.log.read_text().strip().splitlines()[-1]
        [kept] = kept_logs(last)
        kept.unlink()
        assert last.startswith(f"Error: tritonserver (pid {server}) was killed by signal SIGKILL (9)"), last
        assert "not restarted (--restarts 0)" in last and "DCGM" not in last
        assert_nothing_left(served.process.pid, pids, workspace)
    finally:
        served.stop()
