"""The new heads export (fp32, fp16, INT8) with their biases: the graph's logits equal the readout of its embeddings."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import write_image_folder

import clipedge
from clipedge.calibration.int8_options import Int8Options
from clipedge.export import export_model
from clipedge.run_dir import load_run, read_manifest

NEW_HEADS = ("zs-lp", "clap", "gda", "lp++")
QUICK = {"zs-lp": dict(views=2, epochs=5), "clap": dict(views=2, epochs=5), "gda": dict(views=2),
         "lp++": dict(views=2, epochs=20)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_image_folder(tmp_path_factory.mktemp("new-heads") / "data", per_class=10)
    made = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = tmp_path_factory.mktemp(kind.replace("+", "p")) / "run"
            clipedge.train(data, made[kind], method=kind, backbone="test-tiny-vit", pretrained="none", shots=4,
                           progress=False, **QUICK[kind])
        return made[kind]

    return get


def run_onnx(path, frames: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": frames})))


def readout_logits(run, embeddings: np.ndarray) -> np.ndarray:
    readout = load_run(run).head.readout()
    return readout.scale * embeddings @ readout.weights.double().numpy().T + readout.bias.double().numpy()


@pytest.mark.parametrize("kind", NEW_HEADS)
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_new_head_exports_with_its_bias(runs, kind, fp16, tmp_path):
    run = runs(kind)
    result = export_model(run, tmp_path / "model.onnx", fp16=fp16, embeddings=True, parity_count=12, progress=False)
    assert result.parity["passed"]
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    outputs = run_onnx(result.artifact, frames)
    expected = readout_logits(run, outputs["embeddings"].astype(np.float64))
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    head = load_run(run).head
    if kind in ("gda", "lp++"):
        assert float(head.readout().bias.abs().sum()) > 0, "the bias this head learned"
    hparams = read_manifest(run)["head"]["hparams"]
    assert hparams["selection"] == type(head).selection


def test_gda_int8_export_keeps_the_bias(runs, tmp_path):
    run = runs("gda")
    result = export_model(run, tmp_path / "model.int8.onnx", int8=Int8Options(count=12), embeddings=True,
                          parity_count=12, progress=False)
    frames = np.random.default_rng(1).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    outputs = run_onnx(result.artifact, frames)
    expected = readout_logits(run, outputs["embeddings"].astype(np.float64))
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    with torch.no_grad():
        assert float(load_run(run).head.gda_bias.abs().sum()) > 0
