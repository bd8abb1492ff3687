"""An ONNX graph as the static TensorRT check reads it: loaded once, with types, shapes, producers and constants.

Needs only the ``onnx`` package, imported on first use so that the runtime installs without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError

ONNX_INSTALL_HINT = "the TensorRT check reads ONNX graphs with the onnx package: pip install onnx"
#: ops whose outputs are shape facts, not image data: INT64 is their natural type
SHAPE_OPS = frozenset({"Shape", "Size"})


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ClipedgeError(ONNX_INSTALL_HINT) from None
    return onnx


def load_model(model: str | Path | Any) -> Any:
    """An ``onnx.ModelProto`` from a path (one-line error for a missing or unreadable file) or as given."""
    onnx = import_onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ClipedgeError(f"model {path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors share no public base
        raise ClipedgeError(f"model {path}: not a valid ONNX model (truncated, or another format; "
                            f"{type(error).__name__})") from None


class Graph:
    """Types, shapes, producers, consumers and constants of one shape-inferred graph."""

    def __init__(self, onnx: Any, model: Any):
        self.onnx = onnx
        graph = model.graph
        self.nodes = list(graph.node)
        self.inputs = [value.name for value in graph.input]
        self.outputs = [value.name for value in graph.output]
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.values = {value.name: value for value in [*graph.value_info, *graph.input, *graph.output]}
        self.producer = {name: node for node in self.nodes for name in node.output if name}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def dtype(self, name: str) -> str | None:
        """The ONNX type name of a tensor ("FLOAT", "UINT8", ...), None when unknown."""
        if name in self.initializers:
            return self.onnx.TensorProto.DataType.Name(self.initializers[name].data_type)
        value = self.values.get(name)
        if value is None or not value.type.HasField("tensor_type"):
            return None
        return self.onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)

    def dims(self, name: str) -> list[int | str | None] | None:
        """Static sizes as ints, symbolic ones by name, unknown ones as None; None for an unknown rank."""
        if name in self.initializers:
            return list(self.initializers[name].dims)
        value = self.values.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output (through Identity), else None."""
        numpy_helper = self.onnx.numpy_helper
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.constant(node.input[0])
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
        return None

    def is_constant(self, name: str) -> bool:
        return self.constant(name) is not None

    def image_data(self) -> set[str]:
        """Tensors computed from the network inputs' values (not only from their shapes)."""
        reached = set(self.inputs)
        for node in self.nodes:  # ONNX nodes are topologically sorted
            if node.op_type not in SHAPE_OPS and any(name in reached for name in node.input):
                reached.update(name for name in node.output if name)
        return reached


def attribute(node: Any, name: str, default: Any = None) -> Any:
    for entry in node.attribute:
        if entry.name == name:
            from onnx import helper

            value = helper.get_attribute_value(entry)
            return value.decode() if isinstance(value, bytes) else value
    return default


def node_label(node: Any) -> str:
    return node.name or (node.output[0] if node.output else "?")
