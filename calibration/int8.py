"""An INT8 model from an fp32 one: compare calibration methods, keep the best, fall back where precision is short.

Which calibration method suits a model is an empirical question (MinMax keeps
outliers, Entropy and Percentile clip them), so with ``method="auto"`` each is
tried and judged by top-1 agreement with the fp32 model on the *selection*
images (held back from calibration, see :mod:`.int8_images`); ties go to the
smaller mean |Δprob|. If even the best misses ``min_agreement`` there, the
encoder's first weighted layer, which reads pixels, is kept in float and the
best method tried again. The final pass/fail verdict is the exporter's, on the
run's test images, which none of this ever sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from .int8_images import CalibrationImages
from .int8_options import DEFAULT_MIN_AGREEMENT, METHODS
from .qdq import QUANTIZED_OP_TYPES, activation_products, first_weighted_node, head_nodes, quantize_qdq


@dataclass
class Candidate:
    """One calibration method's model, judged on the selection images."""

    method: str
    first_layer_float: bool
    agreement: float
    mean_dprob: float

    def key(self) -> tuple[float, float]:
        return self.agreement, -self.mean_dprob


@dataclass
class Int8Model:
    path: Path
    chosen: Candidate
    candidates: list[Candidate]
    images: CalibrationImages
    #: layers with a constant weight (Conv, MatMul, Gemm) whose weight is stored in INT8, and all such layers
    int8_layers: int
    weighted_layers: int

    def metadata(self) -> dict[str, Any]:
        """What the exported model's metadata says about its quantization."""
        return {
            "format": "QDQ", "weights": "int8 symmetric per-channel", "activations": "int8 symmetric per-tensor",
            "calibration_method": self.chosen.method, "first_layer_float": self.chosen.first_layer_float,
            "int8_layers": self.int8_layers, "weighted_layers": self.weighted_layers,
            **self.images.describe(), "selection": [asdict(c) for c in self.candidates],
        }


def count_int8_layers(model: onnx.ModelProto) -> tuple[int, int]:
    """(layers whose constant weight is stored in INT8, all layers with a constant weight) of a QDQ graph."""
    constants = {tensor.name for tensor in model.graph.initializer}
    int8_weights = {node.output[0] for node in model.graph.node
                    if node.op_type == "DequantizeLinear" and node.input[0] in constants}
    weighted = [node for node in model.graph.node
                if node.op_type in QUANTIZED_OP_TYPES and (node.input[1] in constants or node.input[1] in int8_weights)]
    return sum(node.input[1] in int8_weights for node in weighted), len(weighted)


#: (ONNX file, uint8 frames) -> probs: how a model is run to judge it (the exporter's onnxruntime session on the CPU)
ProbsOf = Callable[[Path, np.ndarray], np.ndarray]


def quantize_int8(fp32_path: Path, out_path: Path, images: CalibrationImages, probs_of: ProbsOf,
                  method: str = "auto", min_agreement: float = DEFAULT_MIN_AGREEMENT, fixed_batch: int | None = None,
                  progress: bool = True, *, head_scope: str) -> Int8Model:
    """Write the best INT8 QDQ version of ``fp32_path`` to ``out_path``; see the module docstring."""
    methods = METHODS if method == "auto" else (method,)
    model = onnx.load(str(fp32_path), load_external_data=False)
    always_float = head_nodes(model, head_scope) + activation_products(model)
    reference = probs_of(fp32_path, images.selection)
    work = out_path.with_name(f".{out_path.name}.candidates")
    work.mkdir(exist_ok=True)
    candidates: list[tuple[Candidate, Path]] = []

    def attempt(name: str, first_layer_float: bool) -> None:
        path = work / f"{name}-{len(candidates)}.onnx"
        keep_float = [*always_float, first] if first_layer_float else always_float
        quantize_qdq(fp32_path, path, images.calibration, name, keep_float, fixed_batch)
        probs = probs_of(path, images.selection)
        agreement = float((probs.argmax(1) == reference.argmax(1)).mean())
        candidates.append((Candidate(name, first_layer_float, agreement, float(np.abs(probs - reference).mean())), path))

    first = first_weighted_node(model, always_float)
    try:
        for name in tqdm(methods, desc="INT8 calibration", unit="method", disable=None if progress else True, leave=False):
            attempt(name, first_layer_float=False)
        best, best_path = max(candidates, key=lambda item: item[0].key())
        if best.agreement < min_agreement and first is not None:
            attempt(best.method, first_layer_float=True)
            best, best_path = max(candidates, key=lambda item: item[0].key())
        shutil.move(best_path, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    int8_layers, weighted_layers = count_int8_layers(onnx.load(str(out_path), load_external_data=False))
    return Int8Model(out_path, best, [c for c, _ in candidates], images, int8_layers, weighted_layers)
