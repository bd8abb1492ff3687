"""``export --adaptable``: the embedding model + class bank reproduce the fused head, the text model reproduces
open_clip's text encoder, both pass the static TensorRT check, and a failed gate writes nothing.

Each method's run is trained and exported once per module (the dynamo exporter takes seconds even on tiny models).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
from clipedge.export.fuse import FusedClassifier
from clipedge.export.initial_bank import weights_sha256
from clipedge.export.parity import TOLERANCES, parity_images, reference_outputs
from clipedge.export.text_model import TextEncoder, run_tokenizer
from clipedge.heads.clip_adapter import Adapter, ClipAdapterHead
from clipedge.run_dir import load_run, update_manifest
from clipedge.runtime.classes import bank_logits, load_bank
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.tensorrt.check import check_tensorrt_compatible
from clipedge.runtime.text.tokenizer import tokenizer_from_spec

TRAIN = dict(backbone="test-tiny-vit", pretrained="none", shots=4, progress=False)
QUICK = {"clip-adapter": dict(views=2, epochs=3), "tip-adapter": dict(views=2), "linear-probe": dict(views=2)}
METHODS = ("zero-shot", "clip-adapter", "tip-adapter", "linear-probe")
PARITY = 24
TEMPERATURE = 0.5
def softmax(logits: np.ndarray) -> np.ndarray:
    """Written out apart from the runtime's readout, to check it."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


TEXTS = ["a photo of a red.", "", "UPPER case, punctuation!?", "émoji 🚗 and 日本語", "word " * 40]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_image_folder(tmp_path_factory.mktemp("adaptable") / "data", per_class=10)
    made = {}

    def get(method: str) -> Path:
        if method not in made:
            run = tmp_path_factory.mktemp(method) / "run"
            clipedge.train(data, run, method=method, **TRAIN, **QUICK.get(method, {}))
            if method == "tip-adapter":  # a calibrated run: the bank carries temperature and rejection
                update_manifest(run, "calibration", {"temperature": TEMPERATURE, "rejection_score": "max_prob",
                                                     "threshold": 0.5})
            made[method] = run
        return made[method]

    return get


@pytest.fixture(scope="module")
def exports(runs):
    made = {}

    def get(method: str):
        if method not in made:
            made[method] = export_model(runs(method), adaptable=True, parity_count=PARITY, progress=False)
        return made[method]

    return get


def session_outputs(path: Path, name: str, value: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value})[0]


@pytest.mark.parametrize("method", METHODS)
def test_model_and_bank_equal_the_fused_head(runs, exports, method):
    result = exports(method)
    run = load_run(runs(method))
    bank = load_bank(result.related["class bank"])
    backbone = load_backbone_from_spec(run.backbone_spec)
    temperature = TEMPERATURE if method == "tip-adapter" else None
    fused = FusedClassifier(backbone.model.visual, run.head, run.backbone_spec, temperature)
    reference = reference_outputs(run, backbone, fused, temperature, parity_images(run, PARITY))
    embeddings = session_outputs(result.artifact, "images", reference.frames)
    probs = softmax(bank_logits(bank, embeddings) / bank.temperature)
    bound = TOLERANCES["fp32"][1] / min(temperature or 1.0, 1.0)
    assert np.abs(probs - reference.fused).max() <= bound
    assert (probs.argmax(1) == reference.fused.argmax(1)).all()
    assert result.parity["passed"] and result.parity["images"] == len(reference.frames)
    assert bank.names == run.class_names and bank.head_kind == method
    assert bank.rows == ("learned" if method == "linear-probe" else "text")
    assert bank.has_cache == (method == "tip-adapter")
    assert [entry["source"] for entry in bank.provenance] == ["trained"] * 3
    assert bank.image_counts.sum() == len(run.manifest["class_names"]) * 4 and bank.scatter.any()
    metadata = read_onnx_metadata(result.artifact)
    assert metadata["adaptable"] == "true" and metadata["outputs"] == '["embeddings"]'
    assert [output.name for output in onnx.load(str(result.artifact)).graph.output] == ["embeddings"]


def test_calibration_travels_in_the_bank(exports):
    bank = load_bank(exports("tip-adapter").related["class bank"])
    assert bank.temperature == TEMPERATURE and bank.rejection == {"score": "max_prob", "threshold": 0.5}
    assert load_bank(exports("zero-shot").related["class bank"]).rejection is None


def test_text_model_equals_open_clips_text_encoder(runs, exports):
    result = exports("zero-shot")
    backbone = load_backbone_from_spec(load_run(runs("zero-shot")).backbone_spec)
    metadata = read_onnx_metadata(result.related["text model"])
    tokenizer = tokenizer_from_spec(json.loads(metadata["tokenizer"]))
    tokens = tokenizer(TEXTS)
    exported = session_outputs(result.related["text model"], "tokens", tokens)
    with torch.no_grad():
        expected = backbone.model.encode_text(backbone.tokenizer(TEXTS), normalize=True).numpy()
    assert tokens.dtype == np.int32 and np.array_equal(tokens, backbone.tokenizer(TEXTS).numpy())
    assert np.abs(exported - expected).max() < 1e-5
    assert result.text_gate["passed"] and result.text_gate["tokens_identical"] and result.text_gate["strings"] > 256


def test_text_adapter_gives_the_heads_adapted_rows(runs):
    """A head whose text branch still holds its CLIP-Adapter: the text model's embedding of a prompt is the row the
    head itself makes of that prompt's text embedding."""
    backbone = load_backbone_from_spec(load_run(runs("zero-shot")).backbone_spec)
    prompts = ["a photo of a red.", "a photo of a kettle."]
    with torch.no_grad():
        text = backbone.model.encode_text(backbone.tokenizer(prompts), normalize=True)
        head = ClipAdapterHead(text, backbone.logit_scale, alpha=0.4, branch="text")
        torch.manual_seed(0)
        head.text_adapter = Adapter(text.shape[1]).eval()
        encoder = TextEncoder(backbone.model, head)
        adapted = encoder(torch.from_numpy(run_tokenizer(backbone)(prompts)))
        assert torch.allclose(adapted, head.class_weights(), atol=1e-6)
        assert not torch.allclose(adapted, text, atol=1e-3)


def test_both_graphs_pass_the_static_tensorrt_check(exports):
    result = exports("clip-adapter")
    assert check_tensorrt_compatible(result.related["text model"]) == []
    assert check_tensorrt_compatible(result.artifact) == []
    inputs = onnx.load(str(result.related["text model"])).graph.input
    assert [(i.name, i.type.tensor_type.elem_type) for i in inputs] == [("tokens", onnx.TensorProto.INT32)]
    assert inputs[0].type.tensor_type.shape.dim[1].dim_value == 16  # the tiny config's context length, static


def test_text_model_passes_polygraphy_lint(exports, tmp_path):
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable)) or shutil.which("polygraphy")
    if not polygraphy:
        pytest.skip("polygraphy is not installed (pip install polygraphy)")
    report = tmp_path / "lint.json"
    result = subprocess.run([polygraphy, "check", "lint", str(exports("zero-shot").related["text model"]), "-o",
                             str(report)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lint = json.loads(report.read_text())
    assert [e for e in lint["lint_entries"] if e.get("level") in ("exception", "error")] == []


def test_fingerprint_names_the_space_and_the_files(runs, exports):
    result = exports("zero-shot")
    bank = load_bank(result.related["class bank"])
    backbone = load_backbone_from_spec(load_run(runs("zero-shot")).backbone_spec)

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert bank.space == {"backbone": "test-tiny-vit", "pretrained": "none", "weights_sha256": weights_sha256(backbone.model),
                          "dim": 32, "image_model_sha256": sha(result.artifact)}
    assert bank.text_model == {"file": "model.text.onnx", "sha256": sha(result.related["text model"])}
    assert load_bank(result.related["class bank"], expect_space=bank.space).names == bank.names
    with torch.no_grad():
        backbone.model.text_projection.add_(1e-3)
    assert weights_sha256(backbone.model) != bank.space["weights_sha256"]


def test_cli_replaces_an_existing_file_as_the_fused_export_does(runs, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an older model")
    result = CliRunner().invoke(main, ["export", str(runs("zero-shot")), "--adaptable", "--fp16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "text model:" in result.output and "fp16" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.classes.npz", "model.onnx", "model.text.onnx"]
    assert read_onnx_metadata(out)["precision"] == "fp16"
    assert load_bank(tmp_path / "model.classes.npz").space["image_model_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize("args, message", [
    (["--int8"], "--adaptable and --int8"),
    (["--embeddings"], "--adaptable and --embeddings"),
    (["--frame", "640x480"], "--adaptable and --frame"),
    (["--format", "engine"], "--adaptable: not used by --format engine"),
])
def test_cli_refuses_options_an_adaptable_export_cannot_honour(args, message, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--adaptable", *args])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("target, replacement, message", [
    ("clipedge.export.adaptable.bank_probabilities", lambda bank, embeddings: np.full((len(embeddings), 3), 1 / 3),
     "adaptable model with its class bank failed its parity gate"),
    ("clipedge.export.text_model.allowed_l2_error", lambda scale: -1.0, "text model failed its parity gate"),
])
def test_a_failed_gate_writes_nothing(runs, tmp_path, monkeypatch, target, replacement, message):
    monkeypatch.setattr(target, replacement)
    with pytest.raises(ClipedgeError, match=message) as error:
        export_model(runs("zero-shot"), out=tmp_path / "model.onnx", adaptable=True, parity_count=4, progress=False)
    assert "nothing was written" in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_tokenizer_is_refused_in_one_line():
    backbone = SimpleNamespace(tokenizer=object(), spec=SimpleNamespace(name="hf-hub:some/siglip"))
    with pytest.raises(ClipedgeError, match="uses object, not CLIP's BPE tokenizer"):
        run_tokenizer(backbone)
