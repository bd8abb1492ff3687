"""Would TensorRT 10.x parse this ONNX? A static check against NVIDIA's published rules, without TensorRT.

No GPU or TensorRT exists where clipedge is built and tested, so the exported graphs are held to what
onnx-tensorrt documents and enforces (:mod:`clipedge.runtime.tensorrt.operators` has the table and its source):

- ``operator``: the op type is in the supported-operator table (default ONNX domain only: no custom ops);
- ``dtype``: the node's data input has a type the table lists for that op;
- ``uint8-intermediate``: UINT8 only as a network input or output; an input feeds Cast nodes and nothing else
  (onnx-tensorrt's ModelImporter.cpp: "TensorRT does not support UINT8 types for intermediate tensors!");
- ``int8-outside-qdq``: INT8 tensors only leave QuantizeLinear and enter DequantizeLinear (explicit quantization);
- ``qdq-zero-point`` / ``qdq-scale``: the forms onnx-tensorrt's QuantizeLinear/DequantizeLinear importer
  (onnxOpImporters.cpp, ``QuantDequantLinearHelper``, 10.1-GA) accepts: an INT8 zero point of all zeros
  ("TensorRT only supports symmetric quantization"), a constant, positive scale with as many values as the zero
  point, per-tensor (one value) or per-channel (a 1-D scale as long as the quantized axis) and per-channel only on
  constant weights ("Activations-quantization does not support per-axis quantization");
- ``int64-data``: no INT64 tensor computed from image data (shape arithmetic after Shape/Size is fine);
- ``dynamic-shape``: every dimension static except the batch axis of the network's inputs and outputs, and
  intermediate dimensions derived from it;
- ``opset``: the default-domain opset within the range every 10.x parser supports;
- ``resize``, ``pooling``, ``constant-input``, ``layernorm-outputs``: the restrictions the table states in words.

``check_tensorrt_compatible`` returns every violation; ``require_tensorrt_compatible`` raises on the first, in
one line naming the node, the op and the rule. Needs only the ``onnx`` package (imported on first use).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError

from . import operators as table
from .onnx_graph import SHAPE_OPS, Graph, attribute, import_onnx, load_model, node_label

DEFAULT_DOMAINS = ("", "ai.onnx")
#: the order violations are reported in: the root causes first (a UINT8 Transpose also breaks the dtype rule)
RULES = ("opset", "shape-inference", "uint8-intermediate", "int8-outside-qdq", "operator", "dtype", "qdq-scale",
         "qdq-zero-point", "int64-data", "dynamic-shape", "resize", "pooling", "constant-input", "layernorm-outputs")
#: how onnx's shape inference names a dimension it cannot resolve
UNRESOLVED_DIM = "unk__"


@dataclass(frozen=True)
class Violation:
    """One way a graph breaks a TensorRT rule."""

    node: str
    op: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op}) breaks {self.rule}: {self.detail}"


def check_tensorrt_compatible(model: str | Path | Any) -> list[Violation]:
    """Every way ``model`` (a path or an ``onnx.ModelProto``) breaks TensorRT 10.x's ONNX rules; [] when none."""
    onnx = import_onnx()
    model = load_model(model)
    violations = []
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # noqa: BLE001 - onnx raises InferenceError and checker errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        violations.append(Violation("graph", "-", "shape-inference", f"ONNX shape inference fails ({first}); "
                                                                      "TensorRT's parser needs every shape"))
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # what can be inferred, for the rest
    graph = Graph(onnx, inferred)
    violations.extend(_opset_violations(inferred))
    for node in graph.nodes:
        violations.extend(_node_violations(graph, node))
    violations.extend(_uint8_violations(graph))
    violations.extend(_int8_violations(graph))
    violations.extend(_int64_violations(graph))
    violations.extend(_shape_violations(graph, inferred.graph))
    return sorted(violations, key=lambda violation: RULES.index(violation.rule))


def require_tensorrt_compatible(model: str | Path | Any, source: str | Path | None = None) -> None:
    """Raise the first violation as one line (and how many there are); return quietly for a compatible graph."""
    violations = check_tensorrt_compatible(model)
    if violations:
        more = f" (and {len(violations) - 1} more; `clipedge check` lists them)" if len(violations) > 1 else ""
        where = source if source is not None else (model if isinstance(model, (str, Path)) else "the graph")
        raise ClipedgeError(f"model {where}: not TensorRT-compatible: {violations[0]}{more}")


def _opset_violations(model: Any) -> Iterable[Violation]:
    low, high = table.OPSET_RANGE
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS and not low <= entry.version <= high:
            yield Violation("graph", "-", "opset", f"default-domain opset {entry.version}; TensorRT 10.x parses "
                                                  f"opsets {low} to {high}")


def _node_violations(graph: Graph, node: Any) -> Iterable[Violation]:
    label, op = node_label(node), node.op_type
    if node.domain not in DEFAULT_DOMAINS or op not in table.SUPPORTED_TYPES:
        domain = f" in domain {node.domain!r}" if node.domain not in DEFAULT_DOMAINS else ""
        yield Violation(label, op, "operator", f"{op}{domain} is not in onnx-tensorrt's supported-operator table")
        return
    data = node.input[0] if node.input and node.input[0] else None
    dtype = graph.dtype(data) if data else None
    allowed = table.SUPPORTED_TYPES[op]
    if dtype is not None and dtype not in allowed:
        yield Violation(label, op, "dtype", f"input {data!r} is {dtype}; TensorRT's {op} takes "
                                           f"{', '.join(sorted(allowed))}")
    if op in ("Cast", "CastLike"):
        target = graph.dtype(node.output[0])
        if target is not None and target not in allowed:
            yield Violation(label, op, "dtype", f"casts to {target}; TensorRT casts to {', '.join(sorted(allowed))}")
    if op in ("QuantizeLinear", "DequantizeLinear"):
        yield from _qdq_violations(graph, node)
    elif op == "Resize":
        yield from _resize_violations(node)
    elif op in table.POOLING:
        yield from _pooling_violations(graph, node)
    elif op == "LayerNormalization" and sum(1 for name in node.output if name) > 1:
        yield Violation(label, op, "layernorm-outputs", "only the first output Y is supported (Mean and InvStdDev "
                                                        "are not)")
    index = table.CONSTANT_INPUTS.get(op)
    if index is not None and len(node.input) > index and node.input[index] and not graph.is_constant(node.input[index]):
        yield Violation(label, op, "constant-input", f"input {node.input[index]!r} must be a build-time constant")


def _qdq_violations(graph: Graph, node: Any) -> Iterable[Violation]:
    label, op = node_label(node), node.op_type
    if len(node.input) < 2 or not node.input[1]:
        yield Violation(label, op, "qdq-scale", "a scale input is required")
        return
    scale = graph.constant(node.input[1])
    if scale is None:
        yield Violation(label, op, "qdq-scale", f"scale {node.input[1]!r} must be a constant (an initializer)")
        return
    if not (scale > 0).all():
        yield Violation(label, op, "qdq-scale", "scale coefficients must all be positive")
    if scale.size > 1:
        data_dims = graph.dims(node.input[0])
        axis = attribute(node, "axis", 1)
        if scale.ndim != 1:
            yield Violation(label, op, "qdq-scale", f"a {scale.ndim}-D scale (block quantization) is INT4-only; INT8 "
                                                    "takes one value or a 1-D per-channel scale")
        elif data_dims is not None and data_dims[axis] != scale.size:
            yield Violation(label, op, "qdq-scale", f"{scale.size} scales for {data_dims[axis]} channels on axis {axis}")
        weights = node.input[0] if op == "QuantizeLinear" else _quantized_source(graph, node.input[0])
        if weights is None or not graph.is_constant(weights):
            yield Violation(label, op, "qdq-scale", "per-channel scales apply to constant weights only; activations "
                                                    "take one scale")
    if len(node.input) > 2 and node.input[2]:
        zero = graph.constant(node.input[2])
        zero_type = graph.dtype(node.input[2])
        if zero_type != "INT8":
            yield Violation(label, op, "qdq-zero-point", f"zero point is {zero_type}; TensorRT quantizes to INT8 "
                                                         "(symmetric, zero point 0)")
        if zero is None:
            yield Violation(label, op, "qdq-zero-point", f"zero point {node.input[2]!r} must be a constant")
        elif zero.any():
            yield Violation(label, op, "qdq-zero-point", "TensorRT only supports symmetric quantization: the zero "
                                                         "point must be all zeros")
        elif zero.size != scale.size:
            yield Violation(label, op, "qdq-zero-point", f"{zero.size} zero points for {scale.size} scales")


def _quantized_source(graph: Graph, name: str) -> str | None:
    """For a DequantizeLinear input: the initializer itself, or what its QuantizeLinear quantized."""
    if graph.is_constant(name):
        return name
    producer = graph.producer.get(name)
    return producer.input[0] if producer is not None and producer.op_type == "QuantizeLinear" else None


def _resize_violations(node: Any) -> Iterable[Violation]:
    label = node_label(node)
    checks = (("mode", "nearest", table.RESIZE_MODES),
              ("coordinate_transformation_mode", "half_pixel", table.RESIZE_COORDINATE_MODES),
              ("nearest_mode", "round_prefer_floor", table.RESIZE_NEAREST_MODES),
              ("keep_aspect_ratio_policy", "stretch", table.RESIZE_ASPECT_POLICIES))
    for name, default, allowed in checks:
        value = attribute(node, name, default)
        if value not in allowed:
            yield Violation(label, "Resize", "resize", f"{name}={value!r}; TensorRT supports {', '.join(sorted(allowed))}")
    if attribute(node, "antialias", 0):
        yield Violation(label, "Resize", "resize", "antialias=1; antialiasing is not supported")


def _pooling_violations(graph: Graph, node: Any) -> Iterable[Violation]:
    dims = graph.dims(node.input[0])
    if dims is not None and len(dims) not in (4, 5):
        yield Violation(node_label(node), node.op_type, "pooling", f"{len(dims) - 2}D pooling; TensorRT pools 2D or 3D")
    dilations = attribute(node, "dilations", [])
    if any(d != 1 for d in dilations):
        yield Violation(node_label(node), node.op_type, "pooling", f"dilations {list(dilations)}; must be empty or all ones")


def _uint8_violations(graph: Graph) -> Iterable[Violation]:
    for node in graph.nodes:
        for name in node.output:
            if name and graph.dtype(name) == "UINT8" and name not in graph.outputs:
                yield Violation(node_label(node), node.op_type, "uint8-intermediate",
                                f"produces UINT8 tensor {name!r}; TensorRT allows UINT8 only as network input or output")
    for name in graph.inputs:
        if graph.dtype(name) != "UINT8":
            continue
        for node in graph.consumers.get(name, []):
            if node.op_type != "Cast":
                yield Violation(node_label(node), node.op_type, "uint8-intermediate",
                                f"reads UINT8 input {name!r}; a UINT8 network input must feed a Cast and nothing else")


def _int8_violations(graph: Graph) -> Iterable[Violation]:
    for node in graph.nodes:
        for name in node.output:
            if not name or graph.dtype(name) != "INT8":
                continue
            if node.op_type != "QuantizeLinear":
                yield Violation(node_label(node), node.op_type, "int8-outside-qdq",
                                f"produces INT8 tensor {name!r}; INT8 comes only from QuantizeLinear")
            for consumer in graph.consumers.get(name, []):
                if consumer.op_type != "DequantizeLinear":
                    yield Violation(node_label(consumer), consumer.op_type, "int8-outside-qdq",
                                    f"reads INT8 tensor {name!r}; INT8 goes only into DequantizeLinear")
    for name in graph.initializers:
        if graph.dtype(name) == "INT8":
            for consumer in graph.consumers.get(name, []):
                zero_point = consumer.op_type == "QuantizeLinear" and name in consumer.input[2:3]
                if consumer.op_type != "DequantizeLinear" and not zero_point:
                    yield Violation(node_label(consumer), consumer.op_type, "int8-outside-qdq",
                                    f"reads INT8 weights {name!r}; INT8 goes only into DequantizeLinear")


def _int64_violations(graph: Graph) -> Iterable[Violation]:
    data = graph.image_data()
    for node in graph.nodes:
        for name in node.output:
            if name in data and graph.dtype(name) == "INT64":
                yield Violation(node_label(node), node.op_type, "int64-data",
                                f"computes INT64 tensor {name!r} from image data; keep the data path in float")


def _shape_violations(graph: Graph, proto: Any) -> Iterable[Violation]:
    """Only the batch axis is dynamic: the network's inputs and outputs are static past axis 0, and an intermediate
    dimension is static, an expression of the batch symbol (``2*batch`` where attention folds heads into the
    batch), or, where ONNX's shape inference cannot follow a computed Reshape, unresolved on the leading axis."""
    batch_symbols = set()
    for value in [*proto.input, *proto.output]:
        dims = graph.dims(value.name) or []
        if dims and isinstance(dims[0], str):
            batch_symbols.add(dims[0])
        for axis, size in enumerate(dims[1:], start=1):
            if not isinstance(size, int):
                yield Violation(value.name, "graph input" if value in proto.input else "graph output",
                                "dynamic-shape", f"axis {axis} is {size or 'unknown'}; only the batch axis may be dynamic")
    for node in graph.nodes:
        if node.op_type in SHAPE_OPS:
            continue
        for name in node.output:
            for axis, size in enumerate(graph.dims(name) or []):
                if isinstance(size, int) or axis == 0 and (size is None or size.startswith(UNRESOLVED_DIM)):
                    continue
                if size is None or not _depends_only_on(size, batch_symbols):
                    yield Violation(node_label(node), node.op_type, "dynamic-shape",
                                    f"output {name!r} axis {axis} is {size or 'unknown'}, not derived from the batch size")


def _depends_only_on(expression: str, symbols: set[str]) -> bool:
    """True when a symbolic dimension such as ``batch`` or ``8*batch`` names no symbol but the batch's."""
    import re

    names = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", expression))
    return bool(names) and names <= symbols
