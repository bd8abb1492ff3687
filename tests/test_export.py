"""Fusion, ONNX export (fp32/fp16), metadata, the parity gate and export errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import clipedge
from clipedge.backbone import load_backbone_from_spec
from clipedge.cli import main
from clipedge.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.batch import BatchProfile, parse_batch
from clipedge.export.fuse import FusedClassifier
from clipedge.export.onnx_export import read_metadata
from clipedge.heads import METHODS

from conftest import write_image_folder

TRAIN = dict(pretrained="none", shots=4, views=2, epochs=3, progress=False)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("export") / "data", per_class=10)


def make_run(data_folder, tmp_path_factory, method: str, backbone: str = "test-tiny-vit"):
    run = tmp_path_factory.mktemp(f"{method}-{backbone}") / "run"
    clipedge.train(data_folder, run, method=method, backbone=backbone, **TRAIN)
    return run


@pytest.mark.parametrize("method", METHODS)
def test_every_head_exports_and_passes_parity(data_folder, tmp_path_factory, method):
    run = make_run(data_folder, tmp_path_factory, method)
    for fp16 in (False, True):
        result = export_model(run, fp16=fp16, parity_count=24)
        assert result.parity["passed"] and result.parity["images"] == 24
        assert result.artifact.name == ("model.fp16.onnx" if fp16 else "model.onnx")
        assert result.nodes_after <= result.nodes_before


@pytest.mark.parametrize("backbone", ["test-tiny-vit", "test-tiny-rn"])
def test_vit_and_resnet_fp32_fp16_metadata_round_trip(data_folder, tmp_path_factory, backbone):
    run = make_run(data_folder, tmp_path_factory, "clip-adapter", backbone)
    for fp16 in (False, True):
        result = export_model(run, fp16=fp16, parity_count=24, embeddings=True)
        metadata = read_metadata(result.artifact)
        assert json.loads(metadata["class_names"]) == ["blue", "green", "red"]
        assert metadata["image_size"] == "32" and metadata["method"] == "clip-adapter"
        assert metadata["precision"] == ("fp16" if fp16 else "fp32")
        assert metadata["clipedge_version"] == clipedge.__version__
        assert json.loads(metadata["parity"])["passed"] is True
        session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"],
                                       sess_options=_unoptimised() if fp16 else None)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        assert inputs[0].name == "images" and inputs[0].type == "tensor(uint8)"
        assert [o.name for o in outputs] == ["logits", "probs", "embeddings"]
        assert all(o.type == "tensor(float)" for o in outputs)
        frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)  # a batch size never exported
        logits, probs, embeddings = session.run(None, {"images": frames})
        assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-3)


def _unoptimised() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


@pytest.mark.parametrize("backbone", ["test-tiny-vit", "test-tiny-rn"])
def test_folding_is_exact(data_folder, tmp_path_factory, backbone):
    run = clipedge.load_run(make_run(data_folder, tmp_path_factory, "tip-adapter", backbone))
    visual = load_backbone_from_spec(run.backbone_spec).model.visual
    folded = FusedClassifier(visual, run.head, run.backbone_spec, fold=True)
    plain = FusedClassifier(visual, run.head, run.backbone_spec, fold=False)
    assert folded.normalisation_folded == (backbone == "test-tiny-vit")
    frames = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        for a, b in zip(folded(frames), plain(frames)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_calibrated_temperature_is_baked_into_probs(data_folder, tmp_path_factory):
    from clipedge.run_dir import update_manifest

    run = make_run(data_folder, tmp_path_factory, "zero-shot")
    update_manifest(run, "calibration", {"temperature": 0.25, "rejection_score": "max_prob", "threshold": 0.6})
    result = export_model(run, parity_count=16)
    metadata = read_metadata(result.artifact)
    assert float(metadata["temperature"]) == 0.25 and float(metadata["rejection_threshold"]) == 0.6
    session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    logits, probs = session.run(None, {"images": frames})
    expected = torch.tensor(logits / 0.25).softmax(dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_polygraphy_runs_the_exported_model(data_folder, tmp_path_factory, tmp_path):
    """A consumer that is not clipedge: NVIDIA's Polygraphy loads and runs the ONNX, and its outputs match."""
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable)) or shutil.which("polygraphy")
    if not polygraphy:
        pytest.skip("polygraphy is not installed (pip install polygraphy)")
    run = make_run(data_folder, tmp_path_factory, "linear-probe")
    artifact = export_model(run, parity_count=16).artifact
    saved = tmp_path / "outputs.json"
    result = subprocess.run([polygraphy, "run", str(artifact), "--onnxrt", "--input-shapes", "images:[2,32,32,3]",
                             "--save-inputs", str(tmp_path / "inputs.json"), "--save-outputs", str(saved)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "PASSED" in result.stdout + result.stderr, result.stdout + result.stderr
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    frames = load_json(str(tmp_path / "inputs.json"))[0]["images"]
    outputs = RunResults.load(str(saved))[0][1][0]
    expected = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).run(["probs"], {"images": frames})[0]
    np.testing.assert_allclose(outputs["probs"], expected, atol=1e-6)


def test_fixed_batch_export(data_folder, tmp_path_factory):
    run = make_run(data_folder, tmp_path_factory, "zero-shot")
    artifact = export_model(run, parity_count=8, fixed_batch=8).artifact
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [8, 32, 32, 3]


@pytest.mark.parametrize("text, expected", [("1,8,32", BatchProfile(1, 8, 32)), ("4", BatchProfile(4, 4, 4)), (" 2, 2 ,9", BatchProfile(2, 2, 9))])
def test_batch_profiles(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text, message", [("0", "at least 1"), ("8,4,2", "MIN <= OPT <= MAX"), ("a,b,c", "whole numbers"), ("1,2", "three numbers")])
def test_bad_batch_profiles(text, message):
    with pytest.raises(ClipedgeError, match=message):
        parse_batch(text)


def export_fails(args: list, expected: str) -> None:
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and expected in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1


def test_export_bad_input(data_folder, tmp_path_factory, tmp_path):
    run = make_run(data_folder, tmp_path_factory, "zero-shot")
    export_fails([tmp_path / "missing"], "no such run directory")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "clipedge.json").write_text("{broken")
    export_fails([tmp_path / "corrupt"], "corrupt manifest")
    export_fails([run, "--batch", "0"], "--batch 0")
    export_fails([run, "--batch", "8,4,2"], "MIN <= OPT <= MAX")
    export_fails([run, "--batch", "x"], "whole numbers")
    export_fails([run, "--out", tmp_path / "nowhere" / "m.onnx"], "does not exist")
    if os.geteuid() != 0:  # root writes anywhere, so a read-only folder only stops other users
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        export_fails([run, "--out", locked / "m.onnx"], "not writable")


def test_engine_without_tensorrt_says_how_to_get_it(data_folder, tmp_path_factory):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    run = make_run(data_folder, tmp_path_factory, "zero-shot")
    export_fails([run, "--format", "engine"], "pip install 'clipedge[tensorrt]'")
    assert not (run / "export" / "model.engine").exists()


def test_failed_parity_or_interruption_writes_nothing(data_folder, tmp_path_factory, monkeypatch):
    run = make_run(data_folder, tmp_path_factory, "zero-shot")
    monkeypatch.setitem(clipedge.export.parity.TOLERANCES, "fp32", (1.0, -1.0))  # impossible: |Δprob| ≤ −1
    with pytest.raises(ClipedgeError, match="failed its parity gate: top-1 agreement"):
        export_model(run, parity_count=8)
    assert not any((run / "export").iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("clipedge.export.exporter.check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(run, parity_count=8)
    assert not any((run / "export").iterdir())


def test_export_cli_prints_a_table(data_folder, tmp_path_factory):
    run = make_run(data_folder, tmp_path_factory, "tip-adapter-f")
    result = CliRunner().invoke(main, ["export", str(run), "--fp16"])
    assert result.exit_code == 0, result.output
    assert "model.fp16.onnx" in result.stdout and "top-1 agreement" in result.stdout and "→" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need an NVIDIA GPU; none here")
def test_tensorrt_engine_build(data_folder, tmp_path_factory):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    run = make_run(data_folder, tmp_path_factory, "clip-adapter")
    result = export_model(run, format="engine", batch="1,4,8", parity_count=8)
    sidecar = json.loads((run / "export" / "model.engine.json").read_text())
    assert result.artifact.stat().st_size > 0 and sidecar["build_flags"]["batch_profile"] == "1,4,8"
    assert sidecar["gpu_name"] and sidecar["tensorrt_version"]
