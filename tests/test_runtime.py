"""The torch-free runtime: preprocessing, Classifier, predict and bench, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

import clipedge
from clipedge.cli import main
from clipedge.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.backends.tensorrt_backend import check_compatible
from clipedge.runtime.preprocess import prepare_batch, prepare_frame

from conftest import write_image_folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained tiny run and its fp32 ONNX export."""
    root = tmp_path_factory.mktemp("runtime")
    data = write_image_folder(root / "data", per_class=14)
    run = root / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=4, views=2, progress=False)
    return run, export_model(run, parity_count=16).artifact, data


def test_preprocessing_matches_open_clip_on_real_photographs():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs")
    import open_clip
    import torch

    for size in (224, 64):
        transform = open_clip.image_transform(size, is_train=False)
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            image = Image.fromarray(getattr(skimage_data, name)())
            reference = ((transform(image) * std + mean) * 255).permute(1, 2, 0).numpy()
            ours = prepare_frame(image, size).astype(np.float64)
            assert ours.shape == (size, size, 3)
            assert np.abs(ours - reference).max() <= 1.0 + 1e-3, (name, size)


def test_every_input_kind(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(rgb).save(path)
    expected = prepare_frame(Image.fromarray(rgb), 32)
    assert np.array_equal(prepare_frame(path, 32), expected)
    assert np.array_equal(prepare_frame(str(path), 32), expected)
    assert np.array_equal(prepare_frame(rgb, 32), expected)
    assert np.array_equal(prepare_frame(rgb[..., ::-1].copy(), 32, bgr=True), expected)
    assert prepare_frame(rgb[..., 0], 32).shape == (32, 32, 3)  # grayscale
    rgba = np.concatenate([rgb, np.full((48, 64, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(prepare_frame(rgba, 32), expected)
    at_size = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(prepare_frame(at_size, 32), at_size)  # fast path: untouched
    batch, single = prepare_batch([path, rgb], 32)
    assert batch.shape == (2, 32, 32, 3) and not single
    batch, single = prepare_batch(np.stack([at_size, at_size]), 32)
    assert batch.shape == (2, 32, 32, 3) and not single
    assert prepare_batch(path, 32)[1] is True


@pytest.mark.parametrize("frame, message", [
    (np.zeros((32, 32, 3), np.float32), "expected dtype uint8"),
    (np.zeros((32, 32, 2), np.uint8), "got shape (32, 32, 2)"),
    ("missing.png", "no such file"),
    (42, "expected a path, a PIL image or a uint8 numpy array"),
])
def test_bad_frames_fail_in_one_line(frame, message):
    with pytest.raises(ClipedgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_frame(frame, 32)


def test_classifier_agrees_with_clipedge_eval(exported):
    run, model, _ = exported
    report = clipedge.evaluate(run, progress=False)
    root = Path(report.data)
    classifier = Classifier(model)
    predictions = classifier([root / p["path"] for p in report.predictions])
    agreement = np.mean([pred.indices[0] == p["predicted"] for pred, p in zip(predictions, report.predictions)])
    assert agreement >= 0.995
    assert classifier.labels == ["blue", "green", "red"]
    assert classifier.backend_name == "onnxruntime:CPUExecutionProvider"


def test_classifier_results_and_chunking(exported):
    _, model, data = exported
    classifier = Classifier(model, batch_size=3)
    files = sorted((data / "red").glob("*.png"))[:7]
    results = classifier(files, top_k=2)
    assert len(results) == 7 and all(len(r.labels) == 2 and r.scores[0] >= r.scores[1] for r in results)
    single = classifier(files[0])
    assert single.labels == results[0].labels and single.score == pytest.approx(results[0].score)


def test_classifier_is_safe_to_share_between_threads(exported):
    _, model, data = exported
    classifier = Classifier(model)
    files = sorted((data / "green").glob("*.png"))[:6]
    expected = [r.indices for r in classifier(files)]
    outcomes = []

    def work():
        outcomes.append([r.indices for r in classifier(files)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [expected] * 4


def test_rejection_threshold_gives_unknown(exported, tmp_path):
    _, model, _ = exported
    proto = onnx.load(str(model))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "rejection_threshold", "0.999"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "rejection_score", "max_prob"
    strict = tmp_path / "strict.onnx"
    onnx.save(proto, str(strict))
    prediction = Classifier(strict)(np.zeros((32, 32, 3), np.uint8))
    assert prediction.rejected and prediction.label == "unknown"


def bare_onnx(path: Path) -> Path:
    """A model that honours the input/output contract but carries no clipedge metadata."""
    images = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.arange(12, dtype=np.float32).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "bare", [images], [logits, probs], [weights, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_onnx_without_metadata_uses_generic_labels(tmp_path, caplog):
    classifier = Classifier(bare_onnx(tmp_path / "bare.onnx"))
    prediction = classifier(np.full((8, 8, 3), 200, np.uint8))
    assert prediction.label.startswith("class_") and prediction.indices[0] == 3
    assert "no clipedge metadata" in caplog.text


def test_missing_and_invalid_model_files(tmp_path):
    with pytest.raises(ClipedgeError, match="no such file"):
        Classifier(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ClipedgeError, match="not a valid ONNX model"):
        Classifier(tmp_path / "junk.onnx")
    (tmp_path / "model.tflite").write_bytes(b"")
    with pytest.raises(ClipedgeError, match="expected a .onnx model"):
        Classifier(tmp_path / "model.tflite")


def test_engine_for_another_gpu_or_tensorrt_is_refused():
    sidecar = {"gpu_name": "NVIDIA Jetson Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    check_compatible(Path("m.engine"), sidecar, "NVIDIA Jetson Orin", "8.7", "10.3.0")
    with pytest.raises(ClipedgeError, match="built for NVIDIA Jetson Orin .* this GPU is NVIDIA H100"):
        check_compatible(Path("m.engine"), sidecar, "NVIDIA H100", "9.0", "10.3.0")
    with pytest.raises(ClipedgeError, match="TensorRT 10.3.0 but TensorRT 10.8.0"):
        check_compatible(Path("m.engine"), sidecar, "NVIDIA Jetson Orin", "8.7", "10.8.0")


def test_the_runtime_never_imports_torch(exported):
    _, model, data = exported
    code = (
        "import sys\n"
        "from clipedge.runtime import Classifier\n"
        f"print(Classifier({str(model)!r})({str(next((data / 'red').glob('*.png')))!r}).label)\n"
        "from clipedge.cli import main\n"
        "leaked = [m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("blue", "green", "red")


def test_predict_command(exported, tmp_path):
    _, model, data = exported
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, path in enumerate(sorted((data / "blue").glob("*.png"))[:3]):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    table = CliRunner().invoke(main, ["predict", str(model), str(folder)])
    assert table.exit_code == 0, table.output
    assert "label" in table.stdout and "skipped 2 file(s)" in table.stderr
    as_json = json.loads(CliRunner().invoke(main, ["predict", str(model), str(folder), "--json", "--top-k", "2"]).stdout)
    assert len(as_json["predictions"]) == 3 and as_json["skipped"] == 2
    assert len(as_json["predictions"][0]["labels"]) == 2
    as_csv = CliRunner().invoke(main, ["predict", str(model), str(folder), "--csv"]).stdout.splitlines()
    assert as_csv[0] == "path,label,score" and len(as_csv) == 4
    missing = CliRunner().invoke(main, ["predict", str(tmp_path / "none.onnx"), str(folder)])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_bench_json_schema_with_torch_comparison(exported):
    run, model, _ = exported
    result = CliRunner().invoke(main, ["bench", str(model), "--batch", "1,4", "--iters", "3", "--warmup", "1",
                                       "--threads", "2", "--compare-torch", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [entry["batch"] for entry in report["results"]] == [1, 4]
    for entry in report["results"]:
        for backend in ("runtime", "torch"):
            assert {"p50_ms", "p99_ms", "images_per_s"} <= set(entry[backend])
        assert entry["speedup_p50"] > 0
    bad = CliRunner().invoke(main, ["bench", str(model), "--batch", "x"])
    assert bad.exit_code == 2 and "--batch x" in bad.stderr
