"""The static TensorRT check: each rule rejects a tiny graph that breaks it, every export variant passes it (and
Polygraphy's own lint), and the graph of the old fused module (Transpose before Cast) fails naming the Transpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder
from onnx import TensorProto, helper, numpy_helper

import clipedge
from clipedge.backbone import load_backbone_from_spec
from clipedge.calibration.int8_options import Int8Options
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.fuse import FusedClassifier
from clipedge.export.metadata import calibration_of
from clipedge.export.onnx_export import OnnxGraph, to_onnx
from clipedge.run_dir import load_run, update_manifest
from clipedge.runtime.backends.onnxruntime_options import cpu_graph_optimization
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.tensorrt.check import check_tensorrt_compatible, require_tensorrt_compatible

TRAIN = dict(pretrained="none", shots=4, views=2, epochs=2, progress=False)


def graph_model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def images(shape=("N", 8, 8, 3), dtype=TensorProto.UINT8):
    return helper.make_tensor_value_info("images", dtype, list(shape))


def probs(shape=("N", 3)):
    return helper.make_tensor_value_info("probs", TensorProto.FLOAT, list(shape))


def axes(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def cast_then(*nodes, **kwargs):
    """images (uint8) → Cast → ``nodes`` → probs."""
    return graph_model([helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT), *nodes],
                       [images()], [probs()], **kwargs)


def rules(model) -> set[tuple[str, str]]:
    return {(v.op, v.rule) for v in check_tensorrt_compatible(model)}


def test_a_cast_first_graph_passes():
    model = cast_then(helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=0),
                      helper.make_node("Softmax", ["m"], ["probs"]), initializers=[axes("ax", [1, 2])])
    assert check_tensorrt_compatible(model) == []


def test_uint8_must_feed_a_cast_first():
    model = graph_model([helper.make_node("Transpose", ["images"], ["t"], perm=[0, 3, 1, 2], name="permute"),
                         helper.make_node("Cast", ["t"], ["x"], to=TensorProto.FLOAT),
                         helper.make_node("ReduceMean", ["x", "ax"], ["probs"], keepdims=0)],
                        [images()], [probs()], [axes("ax", [2, 3])])
    violations = check_tensorrt_compatible(model)
    assert ("Transpose", "uint8-intermediate") in {(v.op, v.rule) for v in violations}
    assert all(v.node == "permute" for v in violations)
    with pytest.raises(ClipedgeError, match=r"node 'permute' \(Transpose\) breaks") as error:
        require_tensorrt_compatible(model, "old.onnx")
    assert "\n" not in str(error.value)


def test_shape_of_the_uint8_input_is_refused_too():
    model = cast_then(helper.make_node("Shape", ["images"], ["s"]),
                      helper.make_node("ReduceMean", ["x", "ax"], ["probs"], keepdims=0),
                      initializers=[axes("ax", [1, 2])])
    assert ("Shape", "uint8-intermediate") in rules(model)


def test_unsupported_operator_and_custom_domain():
    model = cast_then(helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                      helper.make_node("BitwiseNot", ["i"], ["n"]),
                      helper.make_node("FastGelu", ["x"], ["probs"], domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    found = rules(model)
    assert ("BitwiseNot", "operator") in found and ("FastGelu", "operator") in found


def test_operator_dtype_restrictions():
    model = graph_model([helper.make_node("Cast", ["images"], ["i"], to=TensorProto.INT32),
                         helper.make_node("MatMul", ["i", "w"], ["m"]),
                         helper.make_node("Cast", ["m"], ["probs"], to=TensorProto.FLOAT)],
                        [images(("N", 3))], [probs()], [numpy_helper.from_array(np.eye(3, dtype=np.int32), "w")])
    assert ("MatMul", "dtype") in rules(model)


def test_int8_lives_only_between_quantize_and_dequantize():
    model = cast_then(helper.make_node("Cast", ["x"], ["q"], to=TensorProto.INT8, name="to_int8"),
                      helper.make_node("Cast", ["q"], ["probs"], to=TensorProto.FLOAT))
    found = rules(model)
    assert ("Cast", "int8-outside-qdq") in found


def qdq(scale, zero, per_channel_input="x", axis=None):
    attrs = {} if axis is None else {"axis": axis}
    return cast_then(helper.make_node("QuantizeLinear", [per_channel_input, "scale", "zero"], ["q"], **attrs),
                     helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], **attrs),
                     helper.make_node("ReduceMean", ["d", "ax"], ["probs"], keepdims=0),
                     initializers=[numpy_helper.from_array(np.asarray(scale, np.float32), "scale"),
                                   numpy_helper.from_array(np.asarray(zero), "zero"), axes("ax", [1, 2])])


def test_qdq_forms_tensorrt_accepts():
    assert check_tensorrt_compatible(qdq(0.1, np.int8(0))) == []
    assert ("QuantizeLinear", "qdq-zero-point") in rules(qdq(0.1, np.int8(3)))  # asymmetric
    assert ("QuantizeLinear", "qdq-zero-point") in rules(qdq(0.1, np.uint8(0)))  # uint8 quantization
    assert ("QuantizeLinear", "qdq-scale") in rules(qdq(-0.1, np.int8(0)))
    per_channel = qdq([0.1, 0.2, 0.3], np.zeros(3, np.int8), axis=3)  # on activations: refused
    assert ("QuantizeLinear", "qdq-scale") in rules(per_channel)


def test_int64_on_the_data_path():
    model = cast_then(helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64, name="to_int64"),
                      helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
                      helper.make_node("ReduceMean", ["f", "ax"], ["probs"], keepdims=0),
                      initializers=[axes("ax", [1, 2])])
    assert ("Cast", "int64-data") in rules(model)


def test_only_the_batch_axis_is_dynamic():
    model = graph_model([helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
                         helper.make_node("ReduceMean", ["x", "ax"], ["probs"], keepdims=0)],
                        [images(("N", "H", 8, 3))], [probs()], [axes("ax", [1, 2])])
    assert ("graph input", "dynamic-shape") in rules(model)


def test_opset_range():
    model = cast_then(helper.make_node("ReduceMean", ["x", "ax"], ["probs"], keepdims=0),
                      initializers=[axes("ax", [1, 2])], opset=21)
    assert ("-", "opset") in rules(model)


def test_resize_restrictions_from_the_table():
    def resize(**attrs):
        return cast_then(helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
                         helper.make_node("Resize", ["nchw", "", "scales"], ["r"], **attrs),
                         helper.make_node("ReduceMean", ["r", "ax"], ["probs"], keepdims=0),
                         initializers=[numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "scales"),
                                       axes("ax", [2, 3])])

    assert check_tensorrt_compatible(resize(mode="linear")) == []
    assert ("Resize", "resize") in rules(resize(mode="cubic"))
    assert ("Resize", "resize") in rules(resize(mode="linear", antialias=1))


def test_constant_inputs_and_pooling():
    model = cast_then(helper.make_node("Shape", ["x"], ["s"]),
                      helper.make_node("Slice", ["s", "one", "two"], ["computed_axes"]),
                      helper.make_node("ReduceMean", ["x", "computed_axes"], ["probs"], keepdims=0),
                      initializers=[axes("one", [1]), axes("two", [2])])
    assert ("ReduceMean", "constant-input") in rules(model)
    pooled = cast_then(helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
                       helper.make_node("MaxPool", ["nchw"], ["p"], kernel_shape=[2, 2], dilations=[2, 2]),
                       helper.make_node("ReduceMean", ["p", "ax"], ["probs"], keepdims=0),
                       initializers=[axes("ax", [2, 3])])
    assert ("MaxPool", "pooling") in rules(pooled)


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(ClipedgeError, match="no such file"):
        check_tensorrt_compatible(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ClipedgeError, match="not a valid ONNX model"):
        check_tensorrt_compatible(tmp_path / "junk.onnx")


# --- every export variant ----------------------------------------------------------------------------------------

VARIANTS = {
    "vit-fp32-embeddings-calibrated": dict(backbone="test-tiny-vit", embeddings=True),
    "vit-fp16": dict(backbone="test-tiny-vit", fp16=True),
    "vit-int8-fixed-batch": dict(backbone="test-tiny-vit", fixed_batch=True, batch="2",
                                 int8=Int8Options(None, 24, "minmax", 0.0)),  # the graph is tested, not the accuracy
    "rn-fp32-fixed-batch": dict(backbone="test-tiny-rn", fixed_batch=True, batch="4"),
    "rn-fp16": dict(backbone="test-tiny-rn", fp16=True),
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Variant name -> exported ONNX path, exported on first use (two runs, one per backbone)."""
    root = tmp_path_factory.mktemp("variants")
    data = write_image_folder(root / "data", per_class=8)
    runs, made = {}, {}

    def get(name: str):
        if name not in made:
            options = dict(VARIANTS[name])
            backbone = options.pop("backbone")
            if backbone not in runs:
                runs[backbone] = root / backbone
                clipedge.train(data, runs[backbone], method="clip-adapter", backbone=backbone, **TRAIN)
                update_manifest(runs[backbone], "calibration", {"temperature": 0.5})
            made[name] = export_model(runs[backbone], root / f"{name}.onnx", parity_count=8, progress=False,
                                      **options).artifact
        return made[name]

    return get


@pytest.mark.parametrize("name", VARIANTS)
def test_every_export_variant_casts_first_and_passes(variants, name):
    path = variants(name)
    model = onnx.load(str(path))
    consumers = [node for node in model.graph.node if "images" in node.input]
    assert [node.op_type for node in consumers] == ["Cast"], name
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert check_tensorrt_compatible(model) == []
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata["batch_profile"] and 1 <= len(json.loads(metadata["reference_set"])["probs"]) <= 8


@pytest.mark.parametrize("name", VARIANTS)
def test_polygraphy_lint_finds_no_errors(variants, name, tmp_path):
    """NVIDIA Polygraphy's own ONNX linter (CPU, onnxruntime), run as a user would run it, at the onnxruntime
    optimisation level the runtime uses for the model's precision (level ALL segfaults on fp16 transformers)."""
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable)) or shutil.which("polygraphy")
    if not polygraphy:
        pytest.skip("polygraphy is not installed (pip install polygraphy)")
    report = tmp_path / "lint.json"
    path = variants(name)
    level = cpu_graph_optimization(read_onnx_metadata(path)["precision"])
    result = subprocess.run([polygraphy, "check", "lint", str(path), "-o", str(report), "--graph-optimization-level",
                             level], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lint = json.loads(report.read_text())
    errors = [entry for entry in lint["lint_entries"] if entry.get("level") in ("exception", "error")]
    assert errors == [] and lint["summary"]["failing"] == [] and lint["summary"]["passing"]


class TransposeFirst(FusedClassifier):
    """The fused module as it was: permute the uint8 frames, then cast (TensorRT refuses the UINT8 transpose)."""

    def forward(self, images: torch.Tensor):
        return self.classify(images.permute(0, 3, 1, 2).float())


def test_the_old_transpose_first_graph_fails_naming_the_transpose(variants, tmp_path, monkeypatch):
    run = load_run(variants("rn-fp16").parent / "test-tiny-rn")
    spec = run.backbone_spec
    backbone = load_backbone_from_spec(spec, "cpu")
    temperature = calibration_of(run).get("temperature")
    old = to_onnx(TransposeFirst(backbone.model.visual, run.head, spec, temperature), spec.image_size).model
    first_reader = next(node for node in old.graph.node if "images" in node.input and node.op_type != "Shape")
    assert first_reader.op_type == "Transpose"
    violations = check_tensorrt_compatible(old)
    assert any(v.op == "Transpose" and v.node == first_reader.name and v.rule == "uint8-intermediate"
               for v in violations)
    path = tmp_path / "old.onnx"
    onnx.save(old, str(path))
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"node '{first_reader.name}' (Transpose) breaks uint8-intermediate" in result.stderr
    assert "uint8-intermediate" in result.stdout  # the table of every violation

    # the export refuses it in one line (after its parity gate passed: the graph computes the right answer)
    monkeypatch.setattr("clipedge.export.exporter.to_onnx", lambda *args: OnnxGraph(old, 1, 1))
    out = tmp_path / "export"
    out.mkdir()
    with pytest.raises(ClipedgeError, match=rf"not TensorRT-compatible: node '{first_reader.name}' \(Transpose\)"):
        export_model(run.path, out / "model.onnx", parity_count=4, progress=False)
    assert list(out.iterdir()) == []


def test_check_command_on_an_export(variants):
    result = CliRunner().invoke(main, ["check", str(variants("rn-fp16"))])
    assert result.exit_code == 0, result.output
    assert "TensorRT-compatible" in result.stdout
