"""An INT8 model from an fp32 one: compare calibration methods, keep the best, return measured layers to float.

1. Which calibration method suits a model is an empirical question (MinMax
   keeps outliers, Entropy and Percentile clip them), so with
   ``method="auto"`` each is tried and judged by top-1 agreement with fp32 on
   the *selection* images (held back from calibration, :mod:`.int8_images`);
   ties go to the smaller mean |Δprob|.
2. The chosen model is judged by the gate (:mod:`.int8_gate`): agreement with
   fp32 on every image calibration did not see, with its 95 % interval.
3. If it misses, the cheapest fix is tried: each INT8 layer's sensitivity is
   measured on the selection images (:mod:`.int8_sensitivity`) and the most
   sensitive are returned to float one at a time, in that order, until the
   gate passes, at most ``MAX_FLOAT_FRACTION`` of them; then the export fails,
   naming the layers it tried. The activation ranges are collected once per
   method and reused, so each step is a graph rewrite and one gate run.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from clipedge.core.errors import ClipedgeError

from .int8_gate import Agreement, AgreementGate
from .int8_images import CalibrationImages
from .int8_options import MAX_FLOAT_FRACTION, METHODS
from .int8_sensitivity import LayerSensitivity, kl_divergence, rank_layers
from .qdq import QUANTIZED_OP_TYPES, activation_products, head_nodes, quantize_qdq


@dataclass
class Candidate:
    """One calibration method's all-INT8 model, judged on the selection images."""

    method: str
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
    #: the gate's verdict on the model written to ``path``
    gate: Agreement
    #: layers with a constant weight (Conv, MatMul, Gemm) whose weight is stored in INT8, and all such layers
    int8_layers: int
    weighted_layers: int
    #: layers returned to float by the measured fallback, most sensitive first (empty when all-INT8 passed)
    float_layers: list[LayerSensitivity] = field(default_factory=list)
    #: the gate's verdict before the fallback, and after each layer it returned to float
    fallback: list[Agreement] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """What the exported model's metadata says about its quantization."""
        return {
            "format": "QDQ", "weights": "int8 symmetric per-channel", "activations": "int8 symmetric per-tensor",
            "calibration_method": self.chosen.method, "int8_layers": self.int8_layers,
            "weighted_layers": self.weighted_layers, **self.images.describe(),
            "selection": [asdict(c) for c in self.candidates], "gate": self.gate.to_dict(),
            "float_layers": [asdict(layer) for layer in self.float_layers],
            "fallback_agreement": [step.agreement for step in self.fallback],
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


def quantize_int8(fp32_path: Path, out_path: Path, images: CalibrationImages, probs_of: ProbsOf, gate: AgreementGate,
                  method: str = "auto", fixed_batch: int | None = None, progress: bool = True, *,
                  head_scope: str) -> Int8Model:
    """Write an INT8 QDQ version of ``fp32_path`` that passes ``gate`` to ``out_path``; see the module docstring.
    Raises a one-line ClipedgeError naming the layers it returned to float when none passes."""
    model = onnx.load(str(fp32_path), load_external_data=False)
    always_float = head_nodes(model, head_scope) + activation_products(model)
    reference = probs_of(fp32_path, images.selection)
    work = out_path.with_name(f".{out_path.name}.candidates")
    work.mkdir(exist_ok=True)
    numbers = itertools.count()

    def quantize(name: str, extra_float: list[str]) -> Path:
        path = work / f"{name}-{next(numbers)}.onnx"
        quantize_qdq(fp32_path, path, images.calibration, name, always_float + extra_float, fixed_batch,
                     ranges=work / f"{name}.ranges.json")
        return path

    try:
        candidates: list[tuple[Candidate, Path]] = []
        methods = METHODS if method == "auto" else (method,)
        for name in tqdm(methods, desc="INT8 calibration", unit="method", disable=None if progress else True, leave=False):
            path = quantize(name, [])
            probs = probs_of(path, images.selection)
            agreement = float((probs.argmax(1) == reference.argmax(1)).mean())
            candidates.append((Candidate(name, agreement, float(np.abs(probs - reference).mean())), path))
        best, best_path = max(candidates, key=lambda item: item[0].key())
        verdicts = [gate.judge(probs_of(best_path, gate.frames))]
        float_layers: list[LayerSensitivity] = []
        if not verdicts[-1].passed:
            best_path, float_layers = _measured_fallback(
                model, always_float, lambda extra: quantize(best.method, extra), probs_of, images, reference,
                best_path, gate, verdicts, progress)
        shutil.move(best_path, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    int8_layers, weighted_layers = count_int8_layers(onnx.load(str(out_path), load_external_data=False))
    return Int8Model(out_path, best, [c for c, _ in candidates], images, verdicts[-1], int8_layers, weighted_layers,
                     float_layers, verdicts)


def _measured_fallback(model: onnx.ModelProto, always_float: list[str], quantize_with: Callable[[list[str]], Path],
                       probs_of: ProbsOf, images: CalibrationImages, reference: np.ndarray, all_int8: Path,
                       gate: AgreementGate, verdicts: list[Agreement], progress: bool) -> tuple[Path, list[LayerSensitivity]]:
    """Return the most sensitive layers to float, one at a time, until ``gate`` passes; ``verdicts`` gets the
    gate's verdict after each. The path of the passing model and the layers it keeps in float."""
    layers = [node for node in model.graph.node if node.op_type in QUANTIZED_OP_TYPES and node.name not in always_float]
    baseline = kl_divergence(reference, probs_of(all_int8, images.selection))
    ranked = rank_layers(layers, quantize_with, lambda path: probs_of(path, images.selection), reference, baseline,
                         progress)
    limit = max(1, math.floor(MAX_FLOAT_FRACTION * len(layers)))
    float_layers: list[LayerSensitivity] = []
    for layer in tqdm(ranked[:limit], desc="INT8 float fallback", unit="layer", disable=None if progress else True,
                      leave=False):
        float_layers.append(layer)
        path = quantize_with([entry.layer for entry in float_layers])
        verdicts.append(gate.judge(probs_of(path, gate.frames)))
        if verdicts[-1].passed:
            return path, float_layers
        path.unlink()
    tried = ", ".join(layer.label() for layer in float_layers)
    raise ClipedgeError(
        f"INT8: agreement with fp32 {verdicts[0].describe()}, required ≥ {100 * gate.min_agreement:g} %; with the "
        f"{len(float_layers)} most sensitive of {len(layers)} INT8 layers returned to float ({tried}) it is still "
        f"{100 * verdicts[-1].agreement:.2f} %; nothing was written. Export fp32 or --fp16 instead, calibrate on "
        "more representative images (--calib), or accept less agreement (--min-agreement)")
