"""Camera frame → probabilities: exact in-graph preprocessing, the fast CPU resize, detector boxes, and
``bench --frame``, checked against Pillow itself and on scikit-image's photographs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_checks import fails_cleanly
from click.testing import CliRunner
from conftest import write_image_folder
from PIL import Image

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.frame_input import FrameFrontEnd, digit_split
from clipedge.export.pil_resample import pil_resize, resample_matrix
from clipedge.runtime import Classifier
from clipedge.runtime.contract import FrameInput, parse_frame
from clipedge.runtime.preprocessing.boxes import check_boxes
from clipedge.runtime.preprocessing.nv12 import decoding_coefficients, nv12_to_rgb, rgb_to_nv12
from clipedge.runtime.preprocessing.transform import prepare_frame, resize_and_crop
from clipedge.runtime.tensorrt.check import check_tensorrt_compatible

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "lanczos": Image.Resampling.LANCZOS}
#: every op a --frame graph may contain: the front end's plus the fused ViT's (TensorRT supports each)
ALLOWED_OPS = {"Cast", "Slice", "Gather", "Reshape", "Expand", "Unsqueeze", "Squeeze", "Concat", "Shape", "Transpose",
               "MatMul", "Gemm", "Mul", "Add", "Sub", "Div", "Floor", "Clip", "Conv", "LayerNormalization", "Softmax",
               "Erf", "ReduceL2", "Max", "Min"}


def photo(name: str) -> np.ndarray:
    pixels = getattr(skimage_data, name)()
    return pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)


def camera(name: str, width: int, height: int) -> np.ndarray:
    """A photograph as a camera frame of that size."""
    return np.asarray(Image.fromarray(photo(name)[..., :3]).resize((width, height), Image.Resampling.BICUBIC))


# --- Pillow's resampling, reproduced ----------------------------------------------------------------------------------


def test_pil_resample_matrices_reproduce_pillow_bit_for_bit():
    rng = np.random.default_rng(0)
    for name in PHOTOS[:2]:
        pixels = photo(name)[..., :3]
        for _ in range(3):
            width, height = (int(v) for v in rng.integers(16, 700, 2))
            for interpolation, resample in FILTERS.items():
                expected = np.asarray(Image.fromarray(pixels).resize((width, height), resample))
                assert np.array_equal(pil_resize(pixels, width, height, interpolation), expected), \
                    (name, width, height, interpolation)


def test_digits_are_exact_in_float32_and_tf32():
    weights = resample_matrix(3840, 398)  # a 4K frame's width to ViT-B's 224 (shortest side): 41 taps
    digits, bits = digit_split(weights)
    assert len(digits) == 3 and bits == 8
    recombined = sum(d.astype(np.int64) << (bits * j) for j, d in enumerate(digits))
    assert np.array_equal(recombined, weights)
    assert np.abs(digits).max() < 2 ** 11  # 11 significant bits: exact as TF32 or fp16 operands
    assert len(digit_split(resample_matrix(1920, 398))[0]) == 2


@pytest.mark.parametrize("size, resize_mode, frame", [
    (224, "shortest", FrameInput(1920, 1080, "rgb")),
    (64, "shortest", FrameInput(1080, 1920, "bgr")),
    (224, "longest", FrameInput(640, 480, "rgb")),
    (96, "squash", FrameInput(1280, 720, "nv12", "bt709")),
    (224, "shortest", FrameInput(1920, 1080, "nv12", "bt601")),
])
def test_front_end_equals_the_pil_pipeline(size, resize_mode, frame):
    """The graph front end against numpy colour conversion + PIL's resize and crop: max grey-level difference 0."""
    rgb = camera("coffee", frame.width, frame.height)
    if frame.pixel_format == "nv12":
        model_input = rgb_to_nv12(rgb, frame.colour_matrix)
        rgb = nv12_to_rgb(model_input, frame.colour_matrix)
    else:
        model_input = np.ascontiguousarray(rgb[..., ::-1]) if frame.pixel_format == "bgr" else rgb
    expected = np.asarray(resize_and_crop(Image.fromarray(rgb), size, "bicubic", resize_mode))
    with torch.no_grad():
        pixels = FrameFrontEnd(frame, size, "bicubic", resize_mode)(torch.from_numpy(model_input.copy())[None])
    assert np.abs(pixels[0].permute(1, 2, 0).numpy() - expected).max() == 0


def test_nv12_matrices_and_layout():
    assert decoding_coefficients("bt601") == decoding_coefficients("bt601").__class__(298, 409, 100, 208, 516)
    assert decoding_coefficients("bt709") == decoding_coefficients("bt709").__class__(298, 459, 55, 136, 541)
    grey = np.full((4, 6, 3), 128, np.uint8)
    planes = rgb_to_nv12(grey, "bt709")
    assert planes.shape == (6, 6) and (planes[:4] == 126).all() and (planes[4:] == 128).all()
    smooth = camera("astronaut", 320, 240)
    assert np.abs(nv12_to_rgb(rgb_to_nv12(smooth, "bt601"), "bt601").astype(int) - smooth).mean() < 4


# --- the fast CPU path --------------------------------------------------------------------------------------------------


def test_fast_resize_stays_close_to_the_exact_transform_on_photographs():
    for name in PHOTOS:
        frame = camera(name, 1920, 1080)
        for size in (224, 64):
            exact = prepare_frame(frame, size, quality="exact").astype(int)
            fast = prepare_frame(frame, size, quality="fast")
            assert np.abs(exact - fast).max() <= 10, (name, size)
            assert np.abs(exact - fast).mean() < 1.0, (name, size)
        bgr = np.ascontiguousarray(frame[..., ::-1])
        assert np.array_equal(prepare_frame(bgr, 64, bgr=True, quality="fast"), prepare_frame(frame, 64, quality="fast"))
    small = photo("chelsea")  # 451x300 → 224: no box reduction, only the crop first: within one grey level
    assert np.abs(prepare_frame(small, 224, quality="fast").astype(int) - prepare_frame(small, 224)).max() <= 1
    portrait = camera("rocket", 300, 500)
    for mode in ("longest", "squash"):
        assert np.abs(prepare_frame(portrait, 64, resize_mode=mode, quality="fast").astype(int)
                      - prepare_frame(portrait, 64, resize_mode=mode)).max() <= 10


def test_jpeg_draft_decoding(tmp_path):
    path = tmp_path / "frame.jpg"
    Image.fromarray(camera("coffee", 1920, 1080)).save(path, quality=92)
    fast = prepare_frame(path, 64, quality="fast").astype(int)
    assert np.abs(fast - prepare_frame(path, 64, quality="exact")).mean() < 2.0
    with pytest.raises(ClipedgeError, match="resize_quality 'best'"):
        prepare_frame(path, 64, quality="best")


# --- exports with the frame in the graph ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    run = root / "run"
    clipedge.train(write_image_folder(root / "data", per_class=6), run, method="zero-shot", backbone="test-tiny-vit",
                   pretrained="none", shots=2, progress=False)
    return run


@pytest.fixture(scope="module")
def exports(run) -> dict[str, Path]:
    out = run / "export"
    out.mkdir(exist_ok=True)
    return {
        "plain": export_model(run, out=out / "model.onnx", parity_count=8, progress=False).artifact,
        "rgb": export_model(run, out=out / "frame.onnx", parity_count=8, frame="1920x1080", progress=False).artifact,
        "nv12": export_model(run, out=out / "nv12.onnx", parity_count=8, frame="1920x1080", pixel_format="nv12",
                             progress=False).artifact,
    }


@pytest.mark.parametrize("kind, shape", [("rgb", ["batch", 1080, 1920, 3]), ("nv12", ["batch", 1620, 1920])])
def test_frame_export_contract_and_parity(exports, kind, shape):
    model = onnx.load(str(exports[kind]))
    metadata = {p.key: p.value for p in model.metadata_props}
    parity = json.loads(metadata["parity"])
    assert parity["passed"] and parity["agreement_pipeline"] == 1.0 and parity["max_dprob_pipeline"] <= 1e-4
    spec = json.loads(metadata["input"])
    assert spec["frame"]["pixel_format"] == kind and spec["shape"][1:] == shape[1:]
    if kind == "nv12":
        assert spec["frame"]["colour_matrix"] == "bt709"  # GStreamer's default above 576 lines
    graph_input = model.graph.input[0]
    assert [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim][1:] == shape[1:]
    readers = [node.op_type for node in model.graph.node if graph_input.name in node.input]
    assert [op for op in readers if op != "Shape"] == ["Cast"]  # TensorRT: UINT8 data feeds a Cast, nothing else
    assert {node.op_type for node in model.graph.node} <= ALLOWED_OPS
    assert "Resize" not in {node.op_type for node in model.graph.node}


@pytest.mark.parametrize("kind", ["rgb", "nv12"])
def test_frame_exports_pass_polygraphy_lint(exports, kind, tmp_path):
    pytest.importorskip("polygraphy", reason="NVIDIA Polygraphy lints the ONNX graph")
    report = tmp_path / "lint.json"
    polygraphy = Path(sys.executable).with_name("polygraphy")  # the console script pip installed beside python
    result = subprocess.run([str(polygraphy), "check", "lint", str(exports[kind]), "-o", str(report)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "PASSED" in result.stdout + result.stderr, result.stderr[-2000:]
    assert not json.loads(report.read_text())["summary"].get("failing")


@pytest.mark.parametrize("kind", ["rgb", "nv12"])
def test_frame_exports_pass_the_static_tensorrt_check(exports, kind):
    """onnx-tensorrt's operator and dtype rules (clipedge.runtime.tensorrt.check): the front end's
    Gather/MatMul/Floor/Clip resampling, the NV12 decoding and the cast-first input all pass."""
    assert check_tensorrt_compatible(exports[kind]) == []


def test_classifier_passes_frames_through_and_refuses_other_sizes(exports):
    frames = [camera(name, 1920, 1080) for name in PHOTOS[:2]]
    plain = Classifier(exports["plain"], resize_quality="exact")
    expected = plain.infer(np.stack([prepare_frame(f, plain.image_size) for f in frames]))["probs"]
    rgb = Classifier(exports["rgb"])
    assert rgb.frame == FrameInput(1920, 1080, "rgb") and rgb.input_sample_shape == (1080, 1920, 3)
    assert np.abs(rgb.infer(np.stack(frames))["probs"] - expected).max() < 1e-5
    assert rgb(frames[0]).labels == plain(frames[0]).labels
    nv12 = Classifier(exports["nv12"])
    planes = [rgb_to_nv12(f, "bt709") for f in frames]
    decoded = np.stack([prepare_frame(nv12_to_rgb(p, "bt709"), plain.image_size) for p in planes])
    assert np.abs(nv12.infer(np.stack(planes))["probs"] - plain.infer(decoded)["probs"]).max() < 1e-5
    with pytest.raises(ClipedgeError, match="frame 1280x720 with 3 channel.*takes 1920x1080 rgb frames"):
        rgb(np.zeros((720, 1280, 3), np.uint8))
    with pytest.raises(ClipedgeError, match="frame 1280x720 .*takes 1920x1080 nv12 frames"):
        nv12(np.zeros((1080, 1280), np.uint8))
    with pytest.raises(ClipedgeError, match="takes whole 1920x1080 rgb frames"):
        rgb(frames[0], boxes=[[0, 0, 10, 10]])


def test_fast_resize_parity_is_recorded(exports):
    metadata = Classifier(exports["plain"]).metadata
    assert json.loads(metadata["fast_resize_parity"])["images"] == 8


# --- detector boxes --------------------------------------------------------------------------------------------------


def test_boxes_classify_each_region_with_the_models_resize(exports):
    classifier = Classifier(exports["plain"])
    frame = camera("astronaut", 640, 480)
    boxes = [[0, 0, 200, 150], [100.4, 50, 420, 479.5], [600, 400, 640, 480]]
    predictions = classifier(frame, boxes=boxes)
    assert len(predictions) == 3
    crops = [frame[0:150, 0:200], frame[50:480, 100:420], frame[400:480, 600:640]]
    expected = classifier.predict(crops)
    assert [p.scores for p in predictions] == [p.scores for p in expected]
    bgr = Classifier(exports["plain"], bgr=True)
    assert [p.scores for p in bgr(np.ascontiguousarray(frame[..., ::-1]), boxes=boxes)] == [p.scores for p in expected]


@pytest.mark.parametrize("boxes, message", [
    ([[0, 0, 700, 10]], "outside the 640x480 frame"),
    ([[-1, 0, 10, 10]], "outside the 640x480 frame"),
    ([[5, 5, 5, 20]], "empty box"),
    ([[20, 5, 10, 30]], "inverted box"),
    ([["a", 0, 1, 1]], "expected four numbers"),
    ([[0, 0, 1]], "expected four numbers"),
    ([], "non-empty list"),
])
def test_bad_boxes_fail_in_one_line(boxes, message):
    with pytest.raises(ClipedgeError, match=message) as error:
        check_boxes(boxes, 640, 480)
    assert "\n" not in str(error.value)


def test_predict_boxes_command(exports, tmp_path):
    image = tmp_path / "street.png"
    Image.fromarray(camera("astronaut", 320, 240)).save(image)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"street.png": [[0, 0, 100, 100], [50, 20, 320, 240]]}))
    result = CliRunner().invoke(main, ["predict", str(exports["plain"]), str(image), "--boxes", str(boxes), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["predictions"]
    assert [row["box"] for row in rows] == [[0, 0, 100, 100], [50, 20, 320, 240]]
    boxes.write_text(json.dumps([[0, 0, 400, 100]]))
    fails_cleanly(["predict", exports["plain"], image, "--boxes", boxes], "outside the 320x240 frame")
    boxes.write_text("{not json")
    fails_cleanly(["predict", exports["plain"], image, "--boxes", boxes], "not valid JSON")


# --- bench --frame ------------------------------------------------------------------------------------------------------


def test_bench_frame_json(exports):
    result = CliRunner().invoke(main, ["bench", str(exports["plain"]), "--batch", "1,2", "--iters", "6", "--warmup", "1",
                                       "--frame", "1280x720", "--jpeg", "--threads", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frame_size"] == "1280x720" and report["jpeg"] == "generated" and report["resize_quality"] == "fast"
    for entry in report["results"]:
        assert set(entry["frame"]) == {"batch", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "iterations"}
        assert entry["frame"]["iterations"] == 6
        assert entry["frame_overhead_p50"] == pytest.approx(entry["frame"]["p50_ms"] / entry["runtime"]["p50_ms"])
    nv12 = CliRunner().invoke(main, ["bench", str(exports["nv12"]), "--batch", "1", "--duration", "0.5", "--frame",
                                     "1920x1080", "--json"])
    assert nv12.exit_code == 0, nv12.output
    entry = json.loads(nv12.stdout)["results"][0]
    assert entry["frame"]["iterations"] == entry["runtime"]["iterations"] >= 1


def test_bench_frame_bad_input(exports, tmp_path):
    model = exports["plain"]
    fails_cleanly(["bench", model, "--frame", "0x0"], "--frame 0x0: width and height must be at least 1 pixel")
    fails_cleanly(["bench", model, "--frame", "wide"], "--frame wide: expected WIDTHxHEIGHT")
    fails_cleanly(["bench", model, "--jpeg"], "--jpeg: times decoding camera frames; give --frame")
    cmyk, grey = tmp_path / "cmyk.jpg", tmp_path / "grey.jpg"
    Image.new("CMYK", (64, 48), (0, 50, 100, 0)).save(cmyk)
    Image.new("L", (64, 48), 128).save(grey)
    fails_cleanly(["bench", model, "--frame", "64x48", "--jpeg", cmyk], "decodes to CMYK, expected a colour")
    fails_cleanly(["bench", model, "--frame", "64x48", "--jpeg", grey], "decodes to L, expected a colour")
    from bad_image_files import bad_files

    for name, (content, reason) in bad_files().items():  # every decoder failure class: one line, no traceback
        (tmp_path / name).write_bytes(content)
        fails_cleanly(["bench", model, "--frame", "64x48", "--jpeg", tmp_path / name], f"not a readable image ({reason}")
    fails_cleanly(["bench", model, "--frame", "64x48", "--jpeg", tmp_path / "nowhere.jpg"], "(missing")
    fails_cleanly(["bench", exports["rgb"], "--frame", "1280x720", "--iters", "1", "--warmup", "0"],
                  "takes 1920x1080 rgb frames")


def test_export_frame_bad_input(run):
    fails_cleanly(["export", run, "--frame", "0x0"], "--frame 0x0: width and height must be at least 1 pixel")
    fails_cleanly(["export", run, "--frame", "1920xabc"], "--frame 1920xabc: expected WIDTHxHEIGHT")
    fails_cleanly(["export", run, "--frame", "1920x1081", "--pixel-format", "nv12"], "must be even")
    fails_cleanly(["export", run, "--pixel-format", "bgr"], "--pixel-format describes the camera frame: add --frame")
    fails_cleanly(["export", run, "--frame", "640x480", "--int8"], "--frame and --int8")
    fails_cleanly(["export", run, "--frame", "640x480", "--colour-matrix", "bt601"], "only NV12 frames carry YCbCr")
    with pytest.raises(ClipedgeError, match="--pixel-format yuyv"):
        parse_frame("640x480", "yuyv")
