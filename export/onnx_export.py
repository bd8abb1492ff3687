"""Writing the fused module as ONNX: dynamic batch, checked, shape-inferred, with clipedge metadata.

torch's dynamo-based exporter is used (``torch.onnx.export(..., dynamo=True)``):
the TorchScript exporter cannot translate the fused multi-head-attention kernel
that open_clip's ViTs run in eval mode, and the dynamo path also handles
ModifiedResNet's attention pooling. Its graph optimiser folds constants and
removes identity ops; node counts before and after are reported.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from .fuse import OUTPUT_NAMES, FusedClassifier

OPSET = 18
INPUT_NAME = "images"
MAX_DYNAMIC_BATCH = 4096


@dataclass
class OnnxGraph:
    model: onnx.ModelProto
    nodes_before: int
    nodes_after: int


def to_onnx(module: FusedClassifier, image_size: int, fixed_batch: int | None = None, opset: int = OPSET) -> OnnxGraph:
    """Export, optimise, infer shapes and fully check the fused module."""
    batch = fixed_batch or 2
    example = torch.zeros(batch, image_size, image_size, 3, dtype=torch.uint8)
    outputs = list(OUTPUT_NAMES[: 3 if module.with_embeddings else 2])
    dynamic = None if fixed_batch else ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), input_names=[INPUT_NAME], output_names=outputs, dynamic_shapes=dynamic,
            opset_version=opset, dynamo=True, optimize=False, verbose=False,
        )
        before = len(program.model_proto.graph.node)
        program.optimize()
    model = onnx.shape_inference.infer_shapes(program.model_proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return OnnxGraph(model, before, len(model.graph.node))


def set_metadata(model: onnx.ModelProto, metadata: dict[str, object]) -> None:
    """String key/value pairs in ``metadata_props``; non-strings are stored as JSON."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}
