"""`clipedge serve` of an adaptable model swaps its class bank live: under load from 4 client threads, a class
is added from images and another renamed through `clipedge classes`, with zero failed requests, every answer
wholly over one bank's classes, the new class answered, and readiness true throughout; a corrupt bank written
over the served one is refused and the old classes keep being served. One tritonserver start, loopback only.
"""

from __future__ import annotations

import os
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
from conftest import COLOURS, write_image_folder
from serve_processes import HOST, free_ports, wait_until

import clipedge
from clipedge.export import export_model
from clipedge.runtime.preprocessing.image_files import collect_images
from clipedge.runtime.preprocessing.transform import prepare_files

pytestmark = pytest.mark.integration

TRAINED = {name: COLOURS[name] for name in ("red", "green")}


@pytest.fixture(scope="module")
def adaptable(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-bank")
    data = write_image_folder(root / "data", per_class=8, classes=TRAINED)
    new = write_image_folder(root / "new", per_class=8, classes={"blue": COLOURS["blue"]}) / "blue"
    run = clipedge.train(data, root / "run", method="tip-adapter", backbone="test-tiny-vit", pretrained="none",
                         shots=4, views=1, progress=False).run_dir
    model = export_model(run, root / "model.onnx", adaptable=True, parity_count=4, progress=False).artifact
    return model, new


@pytest.fixture(scope="module")
def server(adaptable, tmp_path_factory):
    model, _ = adaptable
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve-bank-log") / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("clipedge")), "serve", str(model), "--host", HOST, "--http-port",
             str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--name", "bank",
             "--max-batch", "8", "--threads", "1"], stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not ready(http_port):
        assert process.poll() is None, f"clipedge serve exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"server not ready in time: {log.read_text()}"
        time.sleep(0.5)
    yield {"port": http_port, "log": log}
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ask(client, frame: np.ndarray) -> tuple[list[str], np.ndarray]:
    """One request: the answering bank's class names and the probabilities over them."""
    images = triton_http.InferInput("images", list(frame.shape), "UINT8")
    images.set_data_from_numpy(frame)
    wanted = [triton_http.InferRequestedOutput(name) for name in ("probs", "class_names")]
    result = client.infer("bank", [images], outputs=wanted)
    names = [name.decode() for name in result.as_numpy("class_names")[0]]
    return names, result.as_numpy("probs")[0]


def classes(model: Path, *args: str) -> float:
    """Run `clipedge classes MODEL ...` as a user does; the time it returned."""
    subprocess.run([str(Path(sys.executable).with_name("clipedge")), "classes", str(model), *args], check=True,
                   capture_output=True)
    return time.monotonic()


def blue_frame(new: Path) -> np.ndarray:
    files, _ = collect_images([new])
    frames, _ = prepare_files(sorted(files)[:1], 32)
    return frames


def test_triton_classification_names_no_class_the_bank_may_have_renamed(server, adaptable):
    """Asked for its top classes (Triton's classification extension), the served model answers value:index with
    no label: a label from the exported classes would be wrong once the bank changes; class_names is right."""
    _, new = adaptable
    frame = blue_frame(new)
    client = triton_http.InferenceServerClient(f"{HOST}:{server['port']}")
    images = triton_http.InferInput("images", list(frame.shape), "UINT8")
    images.set_data_from_numpy(frame)
    wanted = [triton_http.InferRequestedOutput("probs", class_count=2), triton_http.InferRequestedOutput("class_names")]
    result = client.infer("bank", [images], outputs=wanted)
    top = [entry.decode().split(":") for entry in result.as_numpy("probs")[0]]
    names, probs = ask(client, frame)
    assert [len(fields) for fields in top] == [2, 2], top  # value:index, no label
    assert int(top[0][1]) == int(np.argmax(probs)) and float(top[0][0]) == pytest.approx(float(probs.max()), abs=1e-6)
    assert [n.decode() for n in result.as_numpy("class_names")[0]] == names


def test_bank_changes_under_load_without_a_failed_request(server, adaptable):
    model, new = adaptable
    frame = blue_frame(new)
    stop, failures, answers, not_ready = threading.Event(), [], [[] for _ in range(4)], []

    def send(index: int) -> None:
        client = triton_http.InferenceServerClient(f"{HOST}:{server['port']}")
        while not stop.is_set():
            try:
                names, probs = ask(client, frame)
                answers[index].append((time.monotonic(), names, probs))
            except Exception as error:  # noqa: BLE001 - collected and asserted on below
                failures.append(error)

    def watch_readiness() -> None:
        while not stop.is_set():
            if not ready(server["port"]):
                not_ready.append(time.monotonic())
            time.sleep(0.1)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)] + [threading.Thread(target=watch_readiness)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        added = classes(model, "add", "blue", "--images", str(new))
        time.sleep(2.0)
        renamed = classes(model, "rename", "red", "crimson")
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:3]
    assert not not_ready, "readiness turned false during the swap"
    banks = [["green", "red"], ["green", "red", "blue"], ["green", "crimson", "blue"]]  # trained: folder order
    for answered in answers:
        seen = [banks.index(names) for _, names, _ in answered]  # raises on any mix of two banks
        assert seen == sorted(seen), "a client saw an older bank after a newer one"
        assert all(len(probs) == len(names) for _, names, probs in answered)
    every = sorted((a for answered in answers for a in answered), key=lambda a: a[0])
    assert every[0][1] == banks[0] and every[-1][1] == banks[2]
    first_added = next(t for t, names, _ in every if names == banks[1] or names == banks[2])
    first_renamed = next(t for t, names, _ in every if names == banks[2])
    print(f"\nswap after `classes add`: {first_added - added:.2f} s; after `classes rename`: "
          f"{first_renamed - renamed:.2f} s; {len(every)} requests, 0 failed")
    final = every[-1]
    assert final[1][int(np.argmax(final[2]))] == "blue", "the added class should be answered for its images"
    relayed = [line for line in server["log"].read_text().splitlines() if "now serving revision" in line]
    assert len(relayed) == 2 and all(line.endswith("(3 classes)") for line in relayed), relayed  # one per swap


def test_a_corrupt_bank_is_refused_and_the_old_classes_kept(server, adaptable):
    model, new = adaptable
    frame = blue_frame(new)
    client = triton_http.InferenceServerClient(f"{HOST}:{server['port']}")
    before, _ = ask(client, frame)
    bank = model.with_name(model.stem + ".classes.npz")
    corrupt = bank.with_name("corrupt.npz.tmp")
    corrupt.write_bytes(bank.read_bytes()[: bank.stat().st_size // 2])  # truncated: the checksum cannot match
    os.replace(corrupt, bank)
    time.sleep(2.0)
    for _ in range(10):
        names, probs = ask(client, frame)
        assert names == before and len(probs) == len(before)
    assert ready(server["port"])
    # the refusal reaches the user of `clipedge serve` (relayed from Triton's private log), once
    refusal = f"class bank {bank}: not swapped in, still serving revision"
    assert wait_until(lambda: refusal in server["log"].read_text(), 10) is not None, server["log"].read_text()
    assert server["log"].read_text().count(refusal) == 1
