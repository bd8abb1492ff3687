"""``clipedge engine`` and the TensorRT runtime path: input checks, sidecars, engines from other tools, and the
builder's logic.

TensorRT cannot be installed where CI runs. What needs it is split in two:
- ``test_logic_*`` run the builder's code against ``FakeTensorRT``, a stand-in recording what the builder asks
  for. Every name it offers is bound by NVIDIA's TensorRT 10.3, 10.16 and 11.1 (test_tensorrt_api.py), and
  these tests check our logic (flags, profile, caches), never TensorRT's behaviour;
- ``test_real_tensorrt_*`` build and run a real clipedge export end to end, and run wherever ``import
  tensorrt`` works and a GPU is visible (the skip reason says which is missing).
Everything before TensorRT is touched (contract, reference set, static check, batch, destination, sidecar
identity, install hints) is tested for real here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import write_image_folder
from onnx import TensorProto, helper
from onnx_models import BLOCK_TORCH
from tensorrt_machine import needs_tensorrt_and_gpu

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.backends.onnxruntime_backend import tensorrt_options
from clipedge.runtime.backends.onnxruntime_options import tensorrt_provider_options
from clipedge.runtime.contract import (
    BatchProfile,
    ReferenceSet,
    engine_fingerprint,
    foreign_engine_metadata,
    read_reference_set,
    recorded_batch_profile,
    sidecar_path,
)
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata


def tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A real clipedge export (tiny ViT, fp32, dynamic batch, the default profile) with its reference set."""
    root = tmp_path_factory.mktemp("engine")
    run = root / "run"
    clipedge.train(write_image_folder(root / "data", per_class=6), run, method="zero-shot", backbone="test-tiny-vit",
                   pretrained="none", shots=2, progress=False)
    return export_model(run, root / "model.onnx", parity_count=8, progress=False).artifact


def engine_fails(args: list, expected: str) -> None:
    result = CliRunner().invoke(main, ["engine", *map(str, args)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: "), result.stderr


# --- what the ONNX carries ---------------------------------------------------------------------------------------


def test_export_records_profile_and_reference_set(exported):
    metadata = read_onnx_metadata(exported)
    assert recorded_batch_profile(metadata) == BatchProfile(1, 8, 32)  # the default profile of a dynamic export
    reference = read_reference_set(metadata, exported)
    assert reference.frames.dtype == np.uint8 and reference.frames.shape == (8, 32, 32, 3)
    assert reference.probs.shape == (8, 3) and reference.min_agreement == 0.99 and reference.max_dprob == 1e-2
    runtime_probs = Classifier(exported).infer(reference.frames)["probs"]  # the ONNX itself passes its own gate
    assert reference.compare(runtime_probs)["passed"]


def test_reference_set_round_trip_and_gate():
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    reference = read_reference_set({"reference_set": ReferenceSet(frames, probs, 0.99, 1e-2).encode()}, "m.onnx")
    assert np.array_equal(reference.frames, frames) and np.allclose(reference.probs, probs)
    assert reference.compare(probs + 0.005)["passed"]
    assert not reference.compare(probs + 0.02)["passed"]  # within top-1 but past |Δprob|
    assert not reference.compare(probs[:, ::-1])["passed"]
    with pytest.raises(ClipedgeError, match="metadata lacks reference_set"):
        read_reference_set({}, "m.onnx")


def test_onnxruntime_tensorrt_profile_comes_from_the_model(tmp_path):
    metadata = {"image_size": "32", "input": json.dumps({"shape": ["N", 32, 32, 3]}), "batch_profile": "2,4,16"}
    options = tensorrt_options(tmp_path / "m.onnx", metadata)
    assert (options["trt_profile_min_shapes"], options["trt_profile_max_shapes"]) == ("images:2x32x32x3",
                                                                                      "images:16x32x32x3")
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path / "trt-cache")
    fixed = {**metadata, "input": json.dumps({"shape": [4, 32, 32, 3]})}
    assert recorded_batch_profile(fixed) == BatchProfile(4, 4, 4)
    assert recorded_batch_profile({"input": "{}"}) == BatchProfile(1, 8, 32)  # exported before profiles were recorded


def test_onnxruntime_tensorrt_provider_options(tmp_path):
    options = tensorrt_provider_options(tmp_path / "trt", 224, BatchProfile(1, 8, 32))
    assert options["trt_fp16_enable"] == "False"  # keep the ONNX's own precisions: a strongly typed network
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert options["trt_timing_cache_enable"] == "True"
    assert (options["trt_profile_min_shapes"], options["trt_profile_opt_shapes"], options["trt_profile_max_shapes"]) == (
        "images:1x224x224x3", "images:8x224x224x3", "images:32x224x224x3")
    assert tensorrt_provider_options(tmp_path, 224, BatchProfile(1, 8, 32), fp16_anywhere=True)["trt_fp16_enable"] == "True"


# --- clipedge engine: bad input ------------------------------------------------------------------------------------


def test_engine_bad_input_is_one_line_and_writes_nothing(exported, tmp_path):
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["probs"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8, 8, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(plain))
    engine_fails([plain], "not a clipedge export with a reference set (metadata lacks class_names, image_size")
    engine_fails([tmp_path / "missing.onnx"], "no such file")
    (tmp_path / "cut.onnx").write_bytes(exported.read_bytes()[:5000])
    engine_fails([tmp_path / "cut.onnx"], "not a valid ONNX model")
    engine_fails([exported, "--batch", "8,4,2"], "MIN <= OPT <= MAX")
    engine_fails([exported, "--batch", "0"], "at least 1")
    engine_fails([exported, "--out", tmp_path / "nowhere" / "m.engine"], "does not exist")

    old = onnx.load(str(exported))  # the old graph: the uint8 input transposed before its Cast
    cast = next(node for node in old.graph.node if node.op_type == "Cast" and "images" in node.input)
    cast.input[0] = "images_nchw"
    old.graph.node.insert(0, helper.make_node("Transpose", ["images"], ["images_nchw"], perm=[0, 1, 2, 3],
                                              name="early_transpose"))
    onnx.save(old, str(tmp_path / "old.onnx"))
    engine_fails([tmp_path / "old.onnx"], "node 'early_transpose' (Transpose) breaks uint8-intermediate")
    assert not list(tmp_path.glob("*.engine*")) and not list(tmp_path.glob(".*partial"))


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here: the real build tests cover it")
def test_engine_without_tensorrt_says_what_to_install(exported, tmp_path):
    engine_fails([exported, "--out", tmp_path / "m.engine"], "TensorRT is not installed; pip install 'clipedge[tensorrt]'")
    result = CliRunner().invoke(main, ["export", str(exported.parent / "run"), "--format", "engine"])
    assert result.exit_code == 2 and "TensorRT is not installed" in result.stderr
    assert not list(tmp_path.iterdir()) and not list((exported.parent / "run" / "export").glob("*.engine"))


def test_check_and_engine_need_no_torch(exported, tmp_path):
    """`clipedge check` and `clipedge engine` in an interpreter where torch, torchvision and open_clip cannot load."""
    code = BLOCK_TORCH + (
        "from clipedge.cli import main\n"
        f"main(['check', {str(exported)!r}], standalone_mode=False)\n"
        "leaked = [m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
        f"main(['engine', {str(exported)!r}, '--out', {str(tmp_path / 'm.engine')!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert "TensorRT-compatible" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    if not tensorrt_installed():
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
            "Error: TensorRT is not installed;"), result.stderr


# --- engines: sidecars, other tools' engines ----------------------------------------------------------------------


def test_sidecar_of_another_engine_or_a_truncated_engine_is_refused(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    facts = {"class_names": ["a", "b"], **engine_fingerprint(engine)}
    sidecar_path(engine).write_text(json.dumps(facts))
    engine.write_bytes(b"serialized engine")  # truncated
    with pytest.raises(ClipedgeError, match="has 17 bytes but model.engine.json describes one of 23 bytes"):
        Classifier(engine)
    engine.write_bytes(b"serialized engine BYTES")  # same size, other content
    with pytest.raises(ClipedgeError, match="belongs to another engine"):
        Classifier(engine)
    sidecar_path(engine).write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(ClipedgeError, match="records no engine_sha256"):
        Classifier(engine)


def test_engines_from_other_tools_take_names_from_beside_them(exported, tmp_path):
    engine = tmp_path / "trtexec.engine"
    engine.write_bytes(b"a plan built by trtexec")
    with pytest.raises(ClipedgeError, match="no trtexec.engine.json sidecar, and neither trtexec.onnx nor labels.txt"):
        foreign_engine_metadata(engine)
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    assert json.loads(foreign_engine_metadata(engine)["class_names"]) == ["cat", "dog"]
    (tmp_path / "trtexec.onnx").write_bytes(exported.read_bytes())  # the ONNX it was built from wins
    assert foreign_engine_metadata(engine)["class_names"] == read_onnx_metadata(exported)["class_names"]
    if not tensorrt_installed():
        with pytest.raises(ClipedgeError, match="TensorRT is not installed"):
            Classifier(engine)


# --- the real thing, wherever TensorRT and a GPU exist -------------------------------------------------------------


@needs_tensorrt_and_gpu
def test_real_tensorrt_engine_from_a_clipedge_export(exported, tmp_path):
    """Build with `clipedge engine` (gated on the embedded reference set), run it with and without CUDA graphs
    against onnxruntime, then as an engine from another tool (no sidecar, labels.txt beside it)."""
    result = CliRunner().invoke(main, ["engine", str(exported), "--out", str(tmp_path / "model.engine"), "--batch",
                                       "1,4,8", "--timing-cache", str(tmp_path / "timing.cache")])
    assert result.exit_code == 0, result.output
    engine = tmp_path / "model.engine"
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["engine_gate"]["passed"] and sidecar["build_flags"]["profile"] == "1,4,8"
    assert sidecar["engine_sha256"] == engine_fingerprint(engine)["engine_sha256"] and sidecar["gpu_name"]
    frames = read_reference_set(read_onnx_metadata(exported), exported).frames
    frames = np.concatenate([frames, frames[:3]])  # 11 frames: split above 8, a short last chunk
    expected = Classifier(exported).infer(frames)["probs"]
    for cuda_graph in (False, True):
        with Classifier(engine, cuda_graph=cuda_graph) as classifier:
            assert classifier.backend.batch_range == (1, 8)
            assert np.abs(classifier.infer(frames)["probs"] - expected).max() < 1e-2
    sidecar_path(engine).unlink()
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    with Classifier(engine) as classifier:
        assert classifier.labels == ["red", "green", "blue"] and classifier.backend.batch_range == (1, 8)
