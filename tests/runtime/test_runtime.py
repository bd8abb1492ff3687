"""The torch-free runtime on small ONNX models built here to the export contract (docs/design.md §5.2).

The models are real ONNX graphs honouring the contract (uint8 NHWC ``images``
in; ``logits`` and ``probs`` out; clipedge ``metadata_props``): Cast → mean
colour over H, W → MatMul → Softmax. With an identity-like class matrix a red
image is "red", so results can be checked by meaning. Tests against models
written by ``clipedge export`` live in test_runtime_export.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx.external_data_helper import set_external_data
from onnx_models import BLOCK_TORCH, COLOURS, SIZE, clipedge_metadata, contract_onnx, plain_classifier_onnx, solid
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.runtime import Classifier, Prediction
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.preprocessing.transform import prepare_batch, prepare_frame

# --- preprocessing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_preprocessing_matches_open_clip_on_real_photographs(resize_mode):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs")
    open_clip = pytest.importorskip("open_clip")
    import torch

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    for size in (224, 64):
        transform = open_clip.image_transform(size, is_train=False, resize_mode=resize_mode)
        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):  # camera is grayscale
            image = Image.fromarray(getattr(skimage_data, name)())
            reference = ((transform(image) * std + mean) * 255).permute(1, 2, 0).numpy()
            ours = prepare_frame(image, size, resize_mode=resize_mode).astype(np.float64)
            assert ours.shape == (size, size, 3)
            assert np.abs(ours - reference).max() <= 1.0, (name, size, resize_mode)


def test_every_input_kind(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(rgb).save(path)
    expected = prepare_frame(Image.fromarray(rgb), 32)
    for same in (path, str(path), rgb, Image.fromarray(np.dstack([rgb, np.full((48, 64), 255, np.uint8)]), "RGBA")):
        assert np.array_equal(prepare_frame(same, 32), expected)
    assert np.array_equal(prepare_frame(np.ascontiguousarray(rgb[..., ::-1]), 32, bgr=True), expected)
    rgba = np.concatenate([rgb, np.full((48, 64, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(prepare_frame(rgba, 32), expected)
    gray = prepare_frame(rgb[..., 0], 32)
    assert gray.shape == (32, 32, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    at_size = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(prepare_frame(at_size, 32), at_size)  # fast path: untouched
    batch, single = prepare_batch([path, rgb], 32)
    assert batch.shape == (2, 32, 32, 3) and not single
    nhwc = np.stack([at_size, at_size])
    batch, single = prepare_batch(nhwc, 32)
    assert batch is nhwc and not single  # already a model batch: no copy
    assert np.array_equal(prepare_batch(nhwc, 32, bgr=True)[0], nhwc[..., ::-1])
    assert prepare_batch(np.stack([rgb, rgb]), 32)[0].shape == (2, 32, 32, 3)
    assert prepare_batch(path, 32)[1] is True


@pytest.mark.parametrize("frame, message", [
    (np.zeros((32, 32, 3), np.float32), "expected dtype uint8 (pixels 0-255), got float32"),
    (np.zeros((32, 32, 2), np.uint8), "got shape (32, 32, 2)"),
    ("missing.png", "no such file"),
    (42, "expected a path, a PIL image or a uint8 numpy array, got int"),
])
def test_bad_frames_fail_in_one_line(frame, message):
    with pytest.raises(ClipedgeError) as error:
        prepare_frame(frame, 32)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_image_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ClipedgeError, match="broken.jpg: not a readable image"):
        prepare_frame(tmp_path / "broken.jpg", 32)


# --- Classifier ----------------------------------------------------------------------------------------------------


def test_classifier_reads_the_contract(model):
    classifier = Classifier(model, providers=["CPUExecutionProvider"])
    assert classifier.labels == COLOURS and classifier.image_size == SIZE
    assert classifier.backend_name == "onnxruntime:CPUExecutionProvider"
    prediction = classifier(solid("green", 40, 60))  # any size: resized and cropped first
    assert isinstance(prediction, Prediction)
    assert prediction.label == "green" and prediction.index == 1 and prediction.labels[0] == "green"
    assert len(prediction.labels) == 3 and prediction.scores == tuple(sorted(prediction.scores, reverse=True))
    assert prediction.to_dict()["label"] == "green"
    assert classifier(solid("blue"), top_k=2).labels[0] == "blue" and len(classifier(solid("blue"), top_k=2).labels) == 2
    assert [p.label for p in classifier([solid("red"), solid("blue")])] == ["red", "blue"]
    bgr = Classifier(model, bgr=True)
    assert bgr(solid("red")).label == "blue"  # a BGR reading of an RGB-red frame is blue


def test_large_inputs_are_chunked(model):
    frames = np.stack([solid(COLOURS[i % 3]) for i in range(11)])
    whole = Classifier(model, batch_size=64).infer(frames)
    chunked = Classifier(model, batch_size=3).infer(frames)
    assert np.allclose(whole["probs"], chunked["probs"]) and chunked["probs"].shape == (11, 3)


def test_fixed_batch_model_pads_the_last_chunk(tmp_path):
    classifier = Classifier(contract_onnx(tmp_path / "fixed.onnx", clipedge_metadata(), fixed_batch=4), batch_size=32)
    assert classifier.batch_size == 4
    predictions = classifier(np.stack([solid(COLOURS[i % 3]) for i in range(6)]))
    assert [p.label for p in predictions] == COLOURS * 2


def test_rejection_threshold_gives_unknown(tmp_path):
    strict = Classifier(contract_onnx(tmp_path / "strict.onnx", clipedge_metadata(rejection_threshold="0.99")))
    grey = strict(np.full((SIZE, SIZE, 3), 128, np.uint8))  # no colour stands out: probabilities ≈ 1/3
    assert grey.rejected and grey.label == "unknown" and grey.labels[0] in COLOURS
    assert strict.rejection_threshold == 0.99
    lenient = Classifier(contract_onnx(tmp_path / "lenient.onnx", clipedge_metadata(rejection_threshold="0.5")))
    assert lenient(solid("red")).label == "red"
    # energy: T·logsumexp(logits / T); a grey-128 frame has logits 12.8 each → 12.8 + log 3 ≈ 13.9
    energy = clipedge_metadata(rejection_threshold="14.5", rejection_score="energy", temperature="1.0")
    by_energy = Classifier(contract_onnx(tmp_path / "energy.onnx", energy))
    assert by_energy(np.full((SIZE, SIZE, 3), 128, np.uint8)).rejected
    assert not by_energy(solid("red")).rejected  # logits 22, 3, 3 → energy ≈ 22


def test_classifier_is_safe_to_share_between_threads(model):
    classifier = Classifier(model, batch_size=2)
    frames = [solid(COLOURS[i % 3], 20 + i, 30) for i in range(9)]
    expected = [p.label for p in classifier(frames)]
    outcomes: list[list[str]] = []

    def work() -> None:
        for _ in range(5):
            outcomes.append([p.label for p in classifier(frames)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [expected] * 20 and expected == COLOURS * 3




def test_onnx_that_is_not_a_clipedge_export_needs_labels(tmp_path):
    plain = plain_classifier_onnx(tmp_path / "plain.onnx")
    with pytest.raises(ClipedgeError) as error:
        Classifier(plain)
    assert str(error.value) == (
        f"model {plain}: not a clipedge export (metadata lacks class_names, image_size, input, outputs, precision); "
        "to run it as a plain classifier of uint8 [N, S, S, 3] RGB frames, give its labels "
        "(Classifier(path, labels=...) or --labels FILE)")
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("rouge\nvert\n\nbleu\n")
    for labels in (["rouge", "vert", "bleu"], labels_file, str(labels_file)):
        classifier = Classifier(plain, labels=labels)
        prediction = classifier(solid("blue", 40, 30))
        assert classifier.labels == ["rouge", "vert", "bleu"] and classifier.image_size == SIZE
        assert prediction.label == "bleu" and prediction.score == pytest.approx(1 / (1 + 2 * np.exp(-19)))
    with pytest.raises(ClipedgeError, match="labels given names 2 classes but the model outputs 3"):
        Classifier(plain, labels=["a", "b"])
    with pytest.raises(ClipedgeError, match=r"input is float32 \[N, 16, 16, 3\]; expected uint8 \[N, S, S, 3\]"):
        Classifier(plain_classifier_onnx(tmp_path / "float.onnx", input_type=TensorProto.FLOAT), labels=labels_file)
    (tmp_path / "empty.txt").write_text("\n")
    for labels, message in ((tmp_path / "empty.txt", "no class names"), (tmp_path / "absent.txt", "cannot read it")):
        with pytest.raises(ClipedgeError, match=f"--labels {re.escape(str(labels))}: {message}"):
            Classifier(plain, labels=labels)
    partial = contract_onnx(tmp_path / "partial.onnx", {"class_names": json.dumps(COLOURS), "precision": "fp32"})
    with pytest.raises(ClipedgeError, match=r"not a clipedge export \(metadata lacks image_size, input, outputs\)"):
        Classifier(partial)


def test_onnx_metadata_is_read_without_onnx(tmp_path):
    path = contract_onnx(tmp_path / "m.onnx", clipedge_metadata(extra="ü ✓"))
    assert read_onnx_metadata(path) == {e.key: e.value for e in onnx.load(str(path)).metadata_props}
    assert read_onnx_metadata(contract_onnx(tmp_path / "bare.onnx")) == {}
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    assert read_onnx_metadata(tmp_path / "junk.onnx") is None


def test_bad_models_fail_in_one_line(tmp_path):
    whole = contract_onnx(tmp_path / "whole.onnx", clipedge_metadata()).read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(whole[: len(whole) // 2])
    for name in ("external", "short"):  # the class matrix in a separate file, as onnx.save stores models over 2 GB
        model = onnx.load(str(tmp_path / "whole.onnx"))
        weights = next(tensor for tensor in model.graph.initializer if tensor.name == "weights")
        (tmp_path / f"{name}.onnx.data").write_bytes(weights.raw_data)
        set_external_data(weights, f"{name}.onnx.data", offset=0, length=len(weights.raw_data))
        weights.data_location = TensorProto.EXTERNAL
        weights.ClearField("raw_data")
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    assert Classifier(tmp_path / "external.onnx")(solid("red")).label == "red"  # complete, it runs
    (tmp_path / "external.onnx.data").unlink()
    data = tmp_path / "short.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    cases = {
        "no such file": tmp_path / "nope.onnx",
        "not a valid ONNX model (truncated, or another format)": tmp_path / "junk.onnx",
        "truncated.onnx: not a valid ONNX model (truncated, or another format)": tmp_path / "truncated.onnx",
        "its weights live in external.onnx.data, which is missing beside it": tmp_path / "external.onnx",
        "external data short.onnx.data is truncated": tmp_path / "short.onnx",
        "expected a .onnx model or a .engine/.plan TensorRT engine": tmp_path / "model.tflite",
        "input is float32 [N, 16, 16, 3]; expected uint8 [N, S, S, 3]":
            contract_onnx(tmp_path / "float.onnx", input_type=TensorProto.FLOAT),
        "metadata names 3 classes but the model outputs 5": contract_onnx(tmp_path / "five.onnx", clipedge_metadata(), classes=5),
        "resize_mode 'fit' is not one of": contract_onnx(tmp_path / "fit.onnx", clipedge_metadata(resize_mode="fit")),
    }
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "model.tflite").write_bytes(b"")
    for message, path in cases.items():
        with pytest.raises(ClipedgeError) as error:
            Classifier(path)
        assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ClipedgeError, match="provider NoSuchExecutionProvider: not available here"):
        Classifier(contract_onnx(tmp_path / "ok.onnx", clipedge_metadata()), providers=["NoSuchExecutionProvider"])


def test_wrong_frames_to_infer_name_what_was_expected(model):
    classifier = Classifier(model)
    for batch, got in ((np.zeros((2, SIZE, SIZE, 3), np.float32), "float32 [2, 16, 16, 3]"),
                       (np.zeros((2, 3, SIZE, SIZE), np.uint8), "uint8 [2, 3, 16, 16]"),
                       (np.zeros((SIZE, SIZE, 3), np.uint8), "uint8 [16, 16, 3]")):
        with pytest.raises(ClipedgeError, match=rf"expected uint8 \[N, 16, 16, 3\], got {re.escape(got)}"):
            classifier.infer(batch)


def test_the_runtime_runs_without_torch(model, frames_folder):
    """Classifier, predict and bench in a fresh interpreter where importing torch, torchvision or open_clip fails."""
    code = BLOCK_TORCH + (
        "from clipedge.runtime import Classifier\n"
        f"print(Classifier({str(model)!r})({str(frames_folder / '2_blue.png')!r}).label)\n"
        "from clipedge.cli import main\n"
        f"main(['predict', {str(model)!r}, {str(frames_folder)!r}, '--json'], standalone_mode=False)\n"
        f"main(['bench', {str(model)!r}, '--batch', '2', '--iters', '2', '--warmup', '0', '--baseline', {str(model)!r}],"
        " standalone_mode=False)\n"
        "from clipedge.runtime.backends.onnxruntime_backend import tensorrt_options\n"  # ONNX Runtime's TensorRT route
        "from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata\n"
        f"assert tensorrt_options(Path({str(model)!r}), read_onnx_metadata(Path({str(model)!r})))"
        "['trt_profile_max_shapes'].endswith('x3')\n"
        "leaked = [m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "blue" and '"label": "red"' in result.stdout
    compare = BLOCK_TORCH + f"from clipedge.cli import main\nmain(['bench', {str(model)!r}, '--compare-torch', 'RUN'])\n"
    result = subprocess.run([sys.executable, "-c", compare], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--compare-torch needs PyTorch and open_clip" in result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_sources_never_import_torch():
    runtime = Path(__file__).resolve().parents[2] / "runtime"
    offending = [f"{path.name}: {line.strip()}" for path in runtime.rglob("*.py") for line in path.read_text().splitlines()
                 if line.lstrip().startswith(("import torch", "from torch", "import open_clip", "from open_clip",
                                              "import torchvision", "from torchvision"))]
    assert not offending
