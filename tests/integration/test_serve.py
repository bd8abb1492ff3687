"""`clipedge serve` on a real Triton Inference Server (the tritonserver of nvidia-pytriton, CPU), on loopback only.

The server is started as users start it, as a `clipedge serve` process on free ports; the tests talk to it
through the runtime's grpc:// and http:// backends, tritonclient and the CLI, and finally stop it with SIGTERM.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from click.testing import CliRunner
from conftest import write_image_folder
from PIL import Image
from serve_processes import HOST, alive, descendants, free_ports
from tritonclient.utils import InferenceServerException

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.bench.server import server_counts
from clipedge.runtime.preprocessing.image_files import collect_images
from clipedge.runtime.preprocessing.transform import prepare_files

pytestmark = pytest.mark.integration

MAX_BATCH = 16


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = write_image_folder(root / "data", per_class=22)  # 66 images, 40 px: the runtime resizes them
    run = root / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=4, views=1,
                   progress=False)
    model = export_model(run, root / "model.onnx", parity_count=8, progress=False).artifact
    images, _ = collect_images([data])
    return model, sorted(images)


@pytest.fixture(scope="module")
def server(model_and_images, tmp_path_factory):
    model, _ = model_and_images
    http_port, grpc_port, metrics_port = free_ports(3)
    clipedge_command = Path(sys.executable).with_name("clipedge")
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(clipedge_command), "serve", str(model), "--host", HOST, "--http-port", str(http_port), "--grpc-port",
             str(grpc_port), "--metrics-port", str(metrics_port), "--name", "tiny", "--max-batch", str(MAX_BATCH),
             "--max-queue-delay-us", "20000", "--threads", "1"],
            stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, f"clipedge serve exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"server not ready in time: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://{HOST}:{http_port}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    yield {"process": process, "http": f"http://{HOST}:{http_port}/tiny", "grpc": f"grpc://{HOST}:{grpc_port}/tiny",
           "http_address": f"{HOST}:{http_port}", "grpc_port": grpc_port, "log": log}
    if process.poll() is None:  # a failed test before the SIGTERM test: still leave nothing behind
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_predictions_equal_the_local_runtime(server, model_and_images, protocol):
    model, images = model_and_images
    assert len(images) >= 64
    local = Classifier(model)
    frames, unreadable = prepare_files(images, local.image_size, local.interpolation, local.resize_mode)
    assert not unreadable
    with Classifier(server[protocol], batch_size=8) as remote:
        assert remote.labels == local.labels and remote.image_size == local.image_size
        assert remote.backend.batch_range == (1, MAX_BATCH)
        served, ours = remote.infer(frames), local.infer(frames)
        assert np.array_equal(served["probs"].argmax(1), ours["probs"].argmax(1))
        assert np.abs(served["probs"] - ours["probs"]).max() <= 1e-5
        assert [p.label for p in remote.predict(images[:10])] == [p.label for p in local.predict(images[:10])]


def test_concurrent_clients_are_batched_by_the_server(server, model_and_images):
    model, _ = model_and_images
    frames = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    clients = [Classifier(server["grpc"]) for _ in range(8)]
    before = server_counts(clients[0])
    answers: list[list[np.ndarray]] = [[] for _ in clients]
    failures: list[BaseException] = []

    def send(index: int) -> None:
        try:
            for _ in range(50):
                answers[index].append(clients[index].infer(frames)["probs"])
        except BaseException as error:  # noqa: BLE001 - collected and asserted on below
            failures.append(error)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server_counts(clients[0])
    for client in clients:
        client.close()
    assert not failures and sum(map(len, answers)) == 400
    expected = Classifier(model).infer(frames)["probs"]
    assert all(np.abs(a - expected).max() <= 1e-5 for answer in answers for a in answer)
    inferences, executions = after["inferences"] - before["inferences"], after["executions"] - before["executions"]
    assert inferences == 400
    assert executions < inferences, "dynamic batching should merge concurrent requests"


def encoded(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(server, model_and_images):
    model, images = model_and_images
    client = triton_http.InferenceServerClient(server["http_address"])

    def status(model: str, array: np.ndarray, datatype: str) -> str:
        request = triton_http.InferInput("images", list(array.shape), datatype)
        request.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [request])
        assert "\n" not in caught.value.message()
        return caught.value.status()

    assert status("tiny", np.zeros((1, 32, 32, 3), np.float32), "FP32") == "400"  # wrong dtype
    assert status("tiny", np.zeros((1, 48, 48, 3), np.uint8), "UINT8") == "400"  # wrong H/W
    assert status("tiny", np.zeros((MAX_BATCH + 1, 32, 32, 3), np.uint8), "UINT8") == "400"  # batch above max
    assert status("tiny_encoded", np.array([[b""]], dtype=object), "BYTES") == "400"  # empty bytes
    assert status("tiny_encoded", np.array([[b"%PDF-1.4 not an image"]], dtype=object), "BYTES") == "400"

    good = triton_http.InferInput("images", [1, 32, 32, 3], "UINT8")
    good.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.uint8))
    assert client.infer("tiny", [good]).as_numpy("probs").shape == (1, 3)
    photo = Image.open(images[0]).convert("RGB")
    request = triton_http.InferInput("images", [2, 1], "BYTES")
    request.set_data_from_numpy(np.array([[encoded(photo)], [encoded(photo, "JPEG")]], dtype=object))
    probs = client.infer("tiny_encoded", [request]).as_numpy("probs")
    client.close()
    assert probs.shape == (2, 3)
    local = Classifier(model)  # decoded and resized on the server exactly as the runtime does for the file
    frames, _ = prepare_files([images[0]], local.image_size, local.interpolation, local.resize_mode,
                              quality=local.resize_quality, decoding=local.decoding)
    assert np.abs(probs[0] - local.infer(frames)["probs"][0]).max() <= 1e-5


def test_predict_and_bench_commands_take_urls(server, model_and_images):
    _, images = model_and_images
    result = CliRunner().invoke(main, ["predict", server["grpc"], *map(str, images[:5]), "--csv"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 6
    result = CliRunner().invoke(main, ["bench", server["http"], "--batch", "2", "--concurrency", "1,2", "--iters", "5",
                                       "--warmup", "1"])
    assert result.exit_code == 0, result.output
    assert "server queue ms/request" in result.output and len(result.output.strip().splitlines()) == 5


def test_dead_server_unknown_model_and_busy_port_are_one_line_errors(server, model_and_images):
    [dead] = free_ports(1)
    for url in (f"grpc://{HOST}:{dead}/tiny", f"http://{HOST}:{dead}/tiny"):
        with pytest.raises(ClipedgeError, match="no Triton server answers"):
            Classifier(url)
    for url in (server["grpc"].replace("/tiny", "/nope"), server["http"].replace("/tiny", "/nope")):
        with pytest.raises(ClipedgeError, match="not a ready model on this server$"):  # the listing is restricted
            Classifier(url)
    model, _ = model_and_images
    other_http, other_metrics = free_ports(2)
    result = CliRunner().invoke(main, ["serve", str(model), "--http-port", str(other_http), "--grpc-port",
                                       str(server["grpc_port"]), "--metrics-port", str(other_metrics)])
    assert result.exit_code == 2 and "--grpc-port" in result.output and "cannot listen" in result.output, result.output


def test_sigterm_stops_the_server_within_10_s_and_leaves_no_process(server):
    process = server["process"]
    below = descendants(process.pid)
    assert below, "tritonserver and its python-backend stubs run below clipedge serve"
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    assert time.monotonic() - began < 10
    assert process.returncode == 0, server["log"].read_text()
    deadline = time.monotonic() + 2
    while any(alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if alive(pid)], f"left running: {below}"
    assert not alive(process.pid)
    assert not list(Path("/dev/shm").glob(f"clipedge_{process.pid}_*")), "python backend shared memory left behind"
