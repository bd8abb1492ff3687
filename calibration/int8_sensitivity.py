"""Per-layer INT8 sensitivity: which layers to return to float, measured rather than guessed.

The method of NVIDIA ModelOpt's and onnxruntime's mixed-precision tools:
dequantize one layer at a time, keep every other layer in INT8, and measure
how far the model's output moves from fp32's on the held-back quarter of the
calibration pool (the *selection* images, never used to collect ranges). A
layer's sensitivity is how much returning it alone to float reduces that
divergence; the most sensitive go back to float first.

The divergence is the mean Kullback–Leibler divergence KL(fp32 ‖ INT8) of the
class probabilities: it weighs the images near a decision boundary (where an
INT8 error flips the answer) above those the model is sure of, and unlike
top-1 agreement it still ranks layers on a set of a few dozen images where
none flips.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

#: probabilities this small are clipped before the logarithm (an INT8 softmax can round a class to exactly 0)
PROB_FLOOR = 1e-12


def kl_divergence(reference: np.ndarray, probs: np.ndarray) -> float:
    """Mean over images of KL(reference ‖ probs), in nats."""
    p = np.clip(reference.astype(np.float64), PROB_FLOOR, 1.0)
    q = np.clip(probs.astype(np.float64), PROB_FLOOR, 1.0)
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())


@dataclass(frozen=True)
class LayerSensitivity:
    """One INT8 layer: the divergence from fp32 with it alone in float, and how much that is below all-INT8."""

    layer: str
    scope: str
    divergence: float
    gain: float

    def label(self) -> str:
        return f"{self.layer} ({self.scope})" if self.scope else self.layer


def module_scope(node: onnx.NodeProto) -> str:
    """The PyTorch module a node came from (``visual.layer1.0.conv1``), read from the scopes torch's exporter
    records, so a message can name a layer as the model's author knows it."""
    recorded = next((entry.value for entry in node.metadata_props if entry.key == "pkg.torch.onnx.name_scopes"), "[]")
    try:
        scopes = ast.literal_eval(recorded)
    except (ValueError, SyntaxError):
        return ""
    return next((str(name) for name in reversed(scopes[:-1]) if name), "")  # the last scope is the op itself


#: extra float layers -> the INT8 model written with them in float
QuantizeWith = Callable[[list[str]], Path]
#: ONNX file -> probabilities on the selection images
SelectionProbs = Callable[[Path], np.ndarray]


def rank_layers(layers: list[onnx.NodeProto], quantize_with: QuantizeWith, probs_of: SelectionProbs,
                reference: np.ndarray, baseline: float, progress: bool = True) -> list[LayerSensitivity]:
    """``layers`` most sensitive first: each returned alone to float and measured against ``reference``
    (``baseline`` is the all-INT8 model's divergence)."""
    measured = []
    for node in tqdm(layers, desc="INT8 layer sensitivity", unit="layer", disable=None if progress else True,
                     leave=False):
        path = quantize_with([node.name])
        divergence = kl_divergence(reference, probs_of(path))
        path.unlink()  # a large model's candidates would otherwise fill the disk, one model file per layer
        measured.append(LayerSensitivity(node.name, module_scope(node), divergence, baseline - divergence))
    return sorted(measured, key=lambda entry: entry.gain, reverse=True)
