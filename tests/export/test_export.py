"""Fusion, ONNX export (fp32/fp16), metadata, the parity gate, export errors and the TensorRT logic.

Exports dominate the time (a few seconds each for the dynamo exporter, even on
tiny models), so each (method, backbone, precision) is exported once per
module by the ``exports`` fixture and shared by the tests that inspect it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.backbone import load_backbone_from_spec
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.batch import resolve_batch
from clipedge.export.fuse import FusedClassifier
from clipedge.export.onnx_export import OnnxGraph
from clipedge.export.parity import parity_images, reference_outputs
from clipedge.heads import METHODS
from clipedge.run_dir import update_manifest
from clipedge.runtime.contract import BatchProfile, parse_batch
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata

TRAIN = dict(pretrained="none", shots=4, progress=False)
#: quick settings for the methods that take them (the others refuse them)
QUICK = {"clip-adapter": dict(views=2, epochs=3), "tip-adapter": dict(views=2), "tip-adapter-f": dict(views=2, epochs=3)}
PARITY = 24
TEMPERATURE = 0.25


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("export") / "data", per_class=10)


@pytest.fixture(scope="module")
def runs(data_folder, tmp_path_factory):
    """(method, backbone) -> a trained run, trained on first use. The zero-shot ViT run is calibrated."""
    made = {}

    def get(method: str, backbone: str = "test-tiny-vit"):
        if (method, backbone) not in made:
            run = tmp_path_factory.mktemp(f"{method}-{backbone}") / "run"
            clipedge.train(data_folder, run, method=method, backbone=backbone, **TRAIN, **QUICK.get(method, {}))
            if (method, backbone) == ("zero-shot", "test-tiny-vit"):
                calibration = {"temperature": TEMPERATURE, "rejection_score": "max_prob", "threshold": 0.6}
                update_manifest(run, "calibration", calibration)
            made[method, backbone] = run
        return made[method, backbone]

    return get


@pytest.fixture(scope="module")
def exports(runs):
    """(method, backbone, fp16) -> ExportResult into the run's default location, exported on first use."""
    made = {}

    def get(method: str, backbone: str = "test-tiny-vit", fp16: bool = False):
        if (method, backbone, fp16) not in made:
            made[method, backbone, fp16] = export_model(runs(method, backbone), fp16=fp16, embeddings=method == "clip-adapter",
                                                        parity_count=PARITY)
        return made[method, backbone, fp16]

    return get


def session(path, fp16: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if fp16:  # see clipedge.export.parity: onnxruntime's CPU layout optimisations crash on fp16 transformers
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_every_head_exports_and_passes_parity(exports, method, fp16):
    result = exports(method, fp16=fp16)
    assert result.parity["passed"] and result.parity["images"] == PARITY
    assert result.artifact.name == ("model.fp16.onnx" if fp16 else "model.onnx")
    assert result.precision == ("fp16" if fp16 else "fp32")
    assert result.nodes_after < result.nodes_before
    assert not [p for p in result.artifact.parent.iterdir() if p.name.startswith(".")], "staging left behind"


@pytest.mark.parametrize("backbone", ["test-tiny-vit", "test-tiny-rn"])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_vit_and_resnet_contract_and_metadata(exports, backbone, fp16):
    result = exports("clip-adapter", backbone, fp16)
    metadata = read_onnx_metadata(result.artifact)
    assert json.loads(metadata["class_names"]) == ["blue", "green", "red"]
    assert metadata["image_size"] == "32" and metadata["method"] == "clip-adapter" and metadata["backbone"] == backbone
    assert metadata["precision"] == result.precision and metadata["clipedge_version"] == clipedge.__version__
    assert json.loads(metadata["input"]) == {"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                                             "shape": ["N", 32, 32, 3]}
    assert json.loads(metadata["parity"]) == result.parity
    model = onnx.load(str(result.artifact))
    assert model.opset_import[0].version == 18
    sess = session(result.artifact, fp16)
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("images", "tensor(uint8)")]
    assert [(o.name, o.type) for o in sess.get_outputs()] == [(n, "tensor(float)") for n in ("logits", "probs", "embeddings")]
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)  # a batch size never exported
    logits, probs, embeddings = sess.run(None, {"images": frames})
    assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-3)


def test_fp16_graph_keeps_head_and_softmax_in_fp32(exports):
    model = onnx.load(str(exports("tip-adapter", fp16=True).artifact))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    half = onnx.TensorProto.FLOAT16
    assert sum(t == half for t in types.values()) > len(types) // 2, "the encoder should run in fp16"
    for node in model.graph.node:
        if node.op_type in ("Exp", "ReduceL2") or node.output[0] in ("logits", "probs"):
            assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.op_type


def test_calibrated_temperature_is_baked_into_probs(exports):
    result = exports("zero-shot")
    metadata = read_onnx_metadata(result.artifact)
    assert float(metadata["temperature"]) == TEMPERATURE and float(metadata["rejection_threshold"]) == 0.6
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    logits, probs = session(result.artifact, False).run(None, {"images": frames})
    np.testing.assert_allclose(probs, torch.tensor(logits / TEMPERATURE).softmax(dim=1).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", ["test-tiny-vit", "test-tiny-rn"])
def test_folding_is_exact_and_fused_equals_unfused_pipeline(runs, backbone):
    run = clipedge.load_run(runs("tip-adapter", backbone))
    backbone_ = load_backbone_from_spec(run.backbone_spec)
    folded = FusedClassifier(backbone_.model.visual, run.head, run.backbone_spec, fold=True)
    plain = FusedClassifier(backbone_.model.visual, run.head, run.backbone_spec, fold=False)
    assert folded.normalisation_folded == (backbone == "test-tiny-vit")
    frames = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        for a, b in zip(folded(frames), plain(frames)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    reference = reference_outputs(run, backbone_, folded, None, parity_images(run, 12))
    np.testing.assert_allclose(reference.fused, reference.pipeline, atol=1e-5)


def test_polygraphy_runs_the_exported_model(exports, tmp_path):
    """A consumer that is not clipedge: NVIDIA's Polygraphy loads and runs the ONNX, and its outputs match."""
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable)) or shutil.which("polygraphy")
    if not polygraphy:
        pytest.skip("polygraphy is not installed (pip install polygraphy)")
    artifact = exports("linear-probe").artifact
    saved = tmp_path / "outputs.json"
    command = [polygraphy, "run", str(artifact), "--onnxrt", "--input-shapes", "images:[2,32,32,3]",
               "--save-inputs", str(tmp_path / "inputs.json"), "--save-outputs", str(saved)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and "PASSED" in result.stdout + result.stderr, result.stdout + result.stderr
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    frames = load_json(str(tmp_path / "inputs.json"))[0]["images"]
    outputs = RunResults.load(str(saved))[0][1][0]
    expected = session(artifact, False).run(["probs"], {"images": frames})[0]
    np.testing.assert_allclose(outputs["probs"], expected, atol=1e-6)


def test_cli_fixed_batch_export_prints_a_table(runs, tmp_path):
    out = tmp_path / "fixed.onnx"
    result = CliRunner().invoke(main, ["export", str(runs("zero-shot")), "--batch", "4", "--fixed-batch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout and "top-1 agreement" in result.stdout and "→" in result.stdout
    assert session(out, False).get_inputs()[0].shape == [4, 32, 32, 3]
    assert json.loads(read_onnx_metadata(out)["input"])["shape"] == [4, 32, 32, 3]


@pytest.mark.parametrize("text, expected", [("1,8,32", BatchProfile(1, 8, 32)), ("4", BatchProfile(4, 4, 4)),
                                            (" 2, 2 ,9", BatchProfile(2, 2, 9)), (3, BatchProfile(3, 3, 3))])
def test_batch_profiles(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text, message", [("0", "at least 1"), ("8,4,2", "MIN <= OPT <= MAX"), ("a,b,c", "whole numbers"),
                                           ("1,2", "three numbers"), ("-1,2,3", "at least 1"), ("", "whole numbers")])
def test_bad_batch_profiles(text, message):
    with pytest.raises(ClipedgeError, match=message):
        parse_batch(text)


def test_batch_resolution():
    assert resolve_batch(None, fixed=False) == (BatchProfile(1, 8, 32), None)
    assert resolve_batch(None, fixed=True) == (BatchProfile(1, 1, 1), 1)
    assert resolve_batch("8", fixed=True) == (BatchProfile(8, 8, 8), 8)
    with pytest.raises(ClipedgeError, match="--fixed-batch: expected one batch size"):
        resolve_batch("1,8,32", fixed=True)


def export_fails(args: list, expected: str) -> None:
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: "), result.stderr


def test_export_bad_input(runs, tmp_path, monkeypatch):
    run = runs("zero-shot")
    export_fails([tmp_path / "missing"], "no such run directory")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "clipedge.json").write_text("{broken")
    export_fails([tmp_path / "corrupt"], "corrupt manifest")
    (tmp_path / "headless").mkdir()
    shutil.copy(run / "clipedge.json", tmp_path / "headless")
    export_fails([tmp_path / "headless"], "missing head.safetensors")
    export_fails([run, "--batch", "0", "--fixed-batch"], "--batch 0")
    export_fails([run, "--batch", "8,4,2", "--format", "engine"], "MIN <= OPT <= MAX")
    export_fails([run, "--batch", "x", "--fixed-batch"], "whole numbers")
    export_fails([run, "--batch", "4"], "--batch needs --fixed-batch or --format engine")
    export_fails([run, "--timing-cache", tmp_path / "t.cache"], "only with --format engine")
    export_fails([run, "--calib", tmp_path], "--calib configures INT8 calibration")
    export_fails([run, "--fp16", "--int8"], "choose one")
    export_fails([run, "--batch", "1,4,8", "--fixed-batch"], "--fixed-batch")
    export_fails([run, "--opset", "13"], "--opset 13")
    export_fails([run, "--opset", "21"], "TensorRT 10.x parses up to 20")
    export_fails([run, "--device", "tpu"], "--device tpu")
    export_fails([run, "--out", tmp_path / "nowhere" / "m.onnx"], "does not exist")
    export_fails([run, "--out", tmp_path], "is a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:  # root writes anywhere: emulate what access(2) tells every other user
        real_access = os.access
        monkeypatch.setattr("clipedge.core.atomic.os.access",
                            lambda path, mode: str(path) != str(locked) and real_access(path, mode))
    export_fails([run, "--out", locked / "m.onnx"], "not writable")
    assert not any(p.name.endswith(".onnx") for p in tmp_path.rglob("*"))


def test_failed_parity_or_interruption_writes_nothing(exports, runs, tmp_path, monkeypatch):
    """The gate and the atomic write, on a reused graph (the export itself is tested above)."""
    model = onnx.load(str(exports("zero-shot").artifact))
    monkeypatch.setattr("clipedge.export.exporter.to_onnx", lambda *args: OnnxGraph(model, 1, 1))
    out = tmp_path / "model.onnx"
    monkeypatch.setitem(clipedge.export.parity.TOLERANCES, "fp32", (1.0, -1.0))  # impossible: |Δprob| ≤ −1
    with pytest.raises(ClipedgeError, match="failed its parity gate: top-1 agreement"):
        export_model(runs("zero-shot"), out, parity_count=8)
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    monkeypatch.setattr("clipedge.export.exporter.to_onnx", lambda *args: OnnxGraph(model, 1, 1))

    def interrupted(staged, destination):
        assert staged.stat().st_size > 0  # the whole model was written, under its temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr("clipedge.export.exporter.publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(runs("zero-shot"), out, parity_count=8)
    assert not list(tmp_path.iterdir())
