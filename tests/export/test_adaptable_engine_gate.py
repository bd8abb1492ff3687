"""An adaptable model can become a TensorRT engine on the device: its export carries the reference frames with
their fp32 PyTorch embeddings, and the engine gate reads both sides out through the class bank beside the
model, the one the engine will serve with, even after the device changed its classes. TensorRT itself cannot
run here: the gate is exercised on the ONNX's own outputs through the runtime's onnxruntime backend, which is
what ``gate_engine`` hands it from the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLOURS, write_image_folder
from tensorrt_machine import needs_tensorrt_and_gpu

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.backends import open_backend
from clipedge.runtime.contract import REFERENCE_KEY, read_reference_set, run_in_batches
from clipedge.runtime.contract.onnx_metadata import onnx_metadata_of
from clipedge.runtime.tensorrt.engine_build import gate_outputs, read_buildable_metadata


@pytest.fixture(scope="module")
def adaptable(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptable-engine")
    trained = {name: COLOURS[name] for name in ("red", "green")}
    data = write_image_folder(root / "data", per_class=10, classes=trained)
    run = clipedge.train(data, root / "run", method="tip-adapter", backbone="test-tiny-vit", pretrained="none",
                         shots=4, views=2, progress=False).run_dir
    model = export_model(run, root / "model.onnx", adaptable=True, parity_count=8, progress=False).artifact
    blue = write_image_folder(root / "new", per_class=6, classes={"blue": COLOURS["blue"]}) / "blue"
    return model, blue


def onnx_outputs(model, frames: np.ndarray) -> dict[str, np.ndarray]:
    """What the engine's backend would hand the gate, from the ONNX the engine is built from."""
    backend = open_backend(model)
    try:
        low, high = backend.batch_range
        return run_in_batches(backend.infer, frames, high or 8, low)
    finally:
        backend.close()


def test_the_export_carries_frames_and_their_fp32_embeddings(adaptable):
    model, _ = adaptable
    metadata = read_buildable_metadata(model)  # was refused: "not a clipedge export with a reference set"
    reference = read_reference_set(metadata, model)
    assert reference.embeddings is not None and reference.embeddings.shape[0] == len(reference.frames) > 0
    assert np.allclose(np.linalg.norm(reference.embeddings, axis=1), 1.0, atol=1e-5)
    exported = onnx_outputs(model, reference.frames)["embeddings"]
    assert np.abs(exported - reference.embeddings).max() < 1e-4  # the ONNX reproduces PyTorch's embeddings


def test_the_gate_reads_both_sides_through_the_bank_the_engine_will_serve_with(adaptable, tmp_path):
    model, blue = adaptable
    metadata = onnx_metadata_of(model)
    reference = read_reference_set(metadata, model)
    outputs = onnx_outputs(model, reference.frames)
    gate = gate_outputs(outputs, reference, model, metadata)
    assert gate["passed"] and gate["agreement"] == 1.0 and gate["classes"] == 2 and gate["max_dprob"] < 1e-3

    with Classifier(model) as classifier:  # the device adds a class before it builds its engine
        classifier.add_class("blue", images=blue)
        classifier.save_classes()
    after = gate_outputs(outputs, reference, model, metadata)
    assert after["passed"] and after["classes"] == 3 and after["bank_revision"] > gate["bank_revision"]

    wrong = np.random.default_rng(0).normal(size=outputs["embeddings"].shape).astype(np.float32)
    wrong /= np.linalg.norm(wrong, axis=1, keepdims=True)  # an engine that computes something else
    failed = gate_outputs({"embeddings": wrong}, reference, model, metadata)
    assert not failed["passed"] and failed["max_dprob"] > failed["max_dprob_allowed"]


def test_a_reference_set_without_embeddings_is_refused_in_one_line(adaptable):
    model, _ = adaptable
    metadata = dict(onnx_metadata_of(model))
    entry = json.loads(metadata[REFERENCE_KEY])
    del entry["embeddings"]
    metadata[REFERENCE_KEY] = json.dumps(entry)
    reference = read_reference_set(metadata, model)
    with pytest.raises(ClipedgeError, match=r"adaptable, but its reference set has no embeddings; re-export it"):
        gate_outputs(onnx_outputs(model, reference.frames), reference, model, metadata)


def test_clipedge_engine_takes_an_adaptable_model_up_to_tensorrt(adaptable, tmp_path):
    """Every check before TensorRT passes; on this machine the one line is TensorRT's absence."""
    model, _ = adaptable
    result = CliRunner().invoke(main, ["engine", str(model), "--out", str(tmp_path / "model.engine")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: TensorRT is not installed"), result.stderr
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.tensorrt
@needs_tensorrt_and_gpu
def test_real_engine_of_an_adaptable_model_serves_a_changed_bank(adaptable, tmp_path):
    """Where TensorRT and a GPU exist: `clipedge engine` builds and gates the engine, which then reads the bank
    beside it, answers as the ONNX does, and takes a new class without a rebuild."""
    model, blue = adaptable
    engine = model.with_suffix(".engine")  # beside the ONNX: the same model.classes.npz
    result = CliRunner().invoke(main, ["engine", str(model), "--out", str(engine)])
    assert result.exit_code == 0, result.output
    frames = read_reference_set(onnx_metadata_of(model), model).frames
    with Classifier(model) as onnx_model, Classifier(engine) as built:
        assert built.labels == onnx_model.labels
        assert np.abs(built.infer(frames)["probs"] - onnx_model.infer(frames)["probs"]).max() < 1e-2
        built.add_class("deep blue", images=blue)
        assert built.predict(sorted(blue.glob("*.png"))[:2])[0].label in ("blue", "deep blue")
