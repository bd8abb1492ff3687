"""The INT8 gate with power: agreement on every image calibration did not see, with its Wilson interval; measured
layers returned to float when it misses; the export failing in one line naming the layers it tried."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from int8_runs import cpu_probs, fp32_export, train_int8_run

import clipedge
from clipedge.backbone import SHIPPED_WEIGHTS, WEIGHTS_DIR
from clipedge.calibration.int8 import quantize_int8
from clipedge.calibration.int8_gate import Agreement, AgreementGate, wilson_interval
from clipedge.calibration.int8_images import calibration_images
from clipedge.calibration.int8_options import MAX_FLOAT_FRACTION, Int8Options
from clipedge.calibration.int8_sensitivity import kl_divergence, module_scope
from clipedge.calibration.qdq import QUANTIZED_OP_TYPES, activation_products, head_nodes
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export import exporter as exporter_module
from clipedge.export.fuse import HEAD_SCOPE
from clipedge.run_features import run_data
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.synthetic import write_task


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_int8_run(tmp_path_factory.mktemp("int8-fallback"))


@pytest.fixture(scope="module")
def fp32_model(tiny_run, tmp_path_factory):
    return fp32_export(tiny_run, tmp_path_factory.mktemp("fp32"))


def int8_layer_names(model_path: Path) -> set[str]:
    """Nodes whose weight comes out of a DequantizeLinear: the layers the file runs in INT8."""
    model = onnx.load(str(model_path))
    dequantized = {node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    return {node.name for node in model.graph.node
            if node.op_type in QUANTIZED_OP_TYPES and len(node.input) > 1 and node.input[1] in dequantized}


@pytest.mark.parametrize("agreeing, images", [(0, 10), (53, 54), (57, 57), (36, 36), (980, 1000), (1, 2)])
def test_wilson_interval_matches_scipy(agreeing, images):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(agreeing, images).proportion_ci(0.95, method="wilson")
    assert wilson_interval(agreeing, images) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_agreement_reports_its_interval():
    one_flip = Agreement(35, 36, 0.98)  # the run: one disagreement on 36 test images
    assert not one_flip.passed and "97.22 % (95 % CI 85.8–99.5 %) of 36 images" in one_flip.describe()
    assert Agreement(56, 57, 0.98).passed and Agreement(57, 57, 0.98).interval[0] == pytest.approx(0.9368, abs=1e-4)
    entry = Agreement(98, 100, 0.98).to_dict()
    assert entry["interval_method"] == "Wilson score" and entry["passed"] and entry["interval"][0] < 0.98 < entry["interval"][1]
    gate = AgreementGate(np.zeros((3, 1)), (np.eye(3), np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])), 0.5)
    assert gate.judge(np.eye(3)) == Agreement(2, 3, 0.5), "the worse of the fp32 references counts"


def test_kl_divergence_and_module_scope(fp32_model):
    reference = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert kl_divergence(reference, reference) == pytest.approx(0, abs=1e-12)
    assert kl_divergence(reference, np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])) > 0.1
    assert np.isfinite(kl_divergence(reference, np.array([[1.0, 0, 0], [0, 0, 1.0]])))
    model = onnx.load(str(fp32_model))
    scopes = {module_scope(node) for node in model.graph.node if node.op_type in QUANTIZED_OP_TYPES}
    assert any(scope.startswith("visual.transformer.resblocks.0") for scope in scopes), scopes


def test_the_layer_that_breaks_int8_is_measured_and_returned_to_float(fp32_model, tiny_run, tmp_path):
    """One layer made fatal in INT8 (its quantized model answers with every class shifted by one): the sensitivity
    ranks it first, the fallback returns it alone to float, the gate passes, and the metadata says so."""
    model = onnx.load(str(fp32_model))
    always_float = set(head_nodes(model, HEAD_SCOPE) + activation_products(model))
    layers = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in always_float]
    fatal = layers[len(layers) // 2]

    def probs_with_a_fatal_layer(path: Path, frames: np.ndarray) -> np.ndarray:
        probs = cpu_probs(path, frames)
        return np.roll(probs, 1, axis=1) if fatal in int8_layer_names(path) else probs

    images = calibration_images(clipedge.load_run(tiny_run), count=24)
    gate_frames = np.concatenate([images.selection, images.calibration])  # any frames: this checks the mechanism
    gate = AgreementGate(gate_frames, (cpu_probs(fp32_model, gate_frames),), min_agreement=0.9)
    result = quantize_int8(fp32_model, tmp_path / "m.int8.onnx", images, probs_with_a_fatal_layer, gate, "minmax",
                           progress=False, head_scope=HEAD_SCOPE)
    assert [layer.layer for layer in result.float_layers] == [fatal]
    assert result.fallback[0].agreement < 0.5 and result.gate.passed and result.gate == result.fallback[-1]
    assert fatal not in int8_layer_names(result.path) and len(int8_layer_names(result.path)) == len(layers) - 1
    assert result.int8_layers == len(layers) - 1
    recorded = result.metadata()
    assert [entry["layer"] for entry in recorded["float_layers"]] == [fatal]
    assert recorded["gate"]["passed"] and recorded["fallback_agreement"][0] < 0.5
    assert not list(tmp_path.glob(".*")), "candidate models are cleaned up"


def test_an_export_that_no_float_layers_can_save_fails_in_one_line_naming_them(tiny_run, fp32_model, tmp_path,
                                                                              monkeypatch):
    real = exporter_module._cpu_probs

    def every_int8_model_disagrees(model_path, frames):
        probs = real(model_path, frames)
        return probs if model_path.name == "fp32.onnx" else np.roll(probs, 1, axis=1)

    monkeypatch.setattr(exporter_module, "_cpu_probs", every_int8_model_disagrees)
    out = tmp_path / "model.int8.onnx"
    with pytest.raises(ClipedgeError) as failure:
        export_model(tiny_run, out, int8=Int8Options(count=24, method="minmax"), parity_count=8, progress=False)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("INT8: agreement with fp32 0.00 % (95 % CI 0.0–")
    assert "images calibration did not see, required ≥ 98 %" in message and "nothing was written" in message
    tried = message[message.index("returned to float (") + len("returned to float ("):message.index(") it is still")]
    fp32 = onnx.load(str(fp32_model))
    always_float = set(head_nodes(fp32, HEAD_SCOPE) + activation_products(fp32))
    layers = [n.name for n in fp32.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in always_float]
    assert len(tried.split(", ")) == max(1, int(MAX_FLOAT_FRACTION * len(layers)))
    assert all(entry.split(" (")[0] in layers for entry in tried.split(", ")), tried
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_export_is_gated_on_more_images_than_the_test_split(tiny_run, tmp_path):
    result = export_model(tiny_run, tmp_path / "model.int8.onnx", int8=Int8Options(count=16), parity_count=8,
                          progress=False)
    quantization = json.loads(read_onnx_metadata(result.artifact)["quantization"])
    gate = quantization["gate"]
    assert result.parity["images"] == gate["images"] == quantization["gate_images"]
    assert gate["images"] > len(run_data(clipedge.load_run(tiny_run)).splits["test"])
    assert gate["passed"] and gate["agreement"] == gate["agreeing"] / gate["images"] >= 0.98


WEIGHTS = WEIGHTS_DIR / SHIPPED_WEIGHTS["clipedge-tiny"][1]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="clipedge-tiny weights are not in this checkout")
def test_the_default_flow_passes_by_keeping_measured_layers_in_float(tmp_path):
    """The default INT8 flow on a 6-class generated folder: `clipedge train DATA --backbone clipedge-tiny --method
    clip-adapter --shots 8`, then `clipedge export RUN --int8`. Measured here (onnxruntime 1.32, 2026-12-02): all-INT8
    agrees with fp32 on 51 of the 54 images calibration did not see (94.4 %; the run has 36 test images), returning
    the two most sensitive convolutions to float brings it to 53 of 54 (98.1 %, 95 % CI 90.2–99.7 %)."""
    data = write_task("colours-tinted", tmp_path / "data", images_per_class=20, seed=2)
    for extra in sorted(data.iterdir())[6:]:
        shutil.rmtree(extra)
    run = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(data), "--out", str(run), "--backbone", "clipedge-tiny", "--method",
                                   "clip-adapter", "--shots", "8"])
    assert trained.exit_code == 0, trained.output
    exported = runner.invoke(main, ["export", str(run), "--int8"])
    assert exported.exit_code == 0, exported.output
    artifact = run / "export" / "model.int8.onnx"
    quantization = json.loads(read_onnx_metadata(artifact)["quantization"])
    gate, float_layers = quantization["gate"], quantization["float_layers"]
    assert gate["passed"] and gate["agreement"] >= 0.98 and quantization["fallback_agreement"][0] < 0.98
    assert gate["images"] > len(run_data(clipedge.load_run(run)).splits["test"])
    assert float_layers and not {layer["layer"] for layer in float_layers} & int8_layer_names(artifact)
    gains = [layer["gain"] for layer in float_layers]
    assert gains == sorted(gains, reverse=True), "returned to float most sensitive first"
    low, high = gate["interval"]
    line = next(line for line in exported.stdout.splitlines() if line.startswith("INT8:"))
    assert f"(95 % CI {100 * low:.1f}–{100 * high:.1f} %) on {gate['images']} images calibration did not see" in line
    assert all(layer["layer"] in exported.stdout for layer in float_layers), "the table names the float layers"
