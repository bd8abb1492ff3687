"""The INT8 recipe: static QDQ quantization with onnxruntime.quantization, float where precision matters.

Each choice has a reason:

- **QDQ format**: onnxruntime's CPU provider fuses DequantizeLinear → op →
  QuantizeLinear into integer kernels, and the very same graph is TensorRT's
  explicit-quantization input (a strongly typed build, no precision flags).
- **Symmetric int8, per-channel weights**: TensorRT accepts only zero points
  of 0; per-channel weight scales cost nothing at run time and keep small
  output channels from being rounded away.
- **What is quantized**: convolutions (inputs and outputs, so onnxruntime runs
  QLinearConv end to end) and matrix products with a constant weight (inputs
  only: the product comes back in float, so the LayerNorm, GELU, residual add
  or bias that follows sees full precision).
- **What stays float**: the head (a normalisation and a cosine against the
  class matrix: CLIP logits are ``100 · cos``, so an int8 cosine would move
  logits by whole units); attention's activation × activation products and
  its softmax; LayerNorm, GELU and residual adds (not quantized op types);
  and, when a model misses its gate, the layers whose measured sensitivity
  puts them first (:mod:`.int8_sensitivity`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from clipedge.core.errors import ClipedgeError

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
#: product ops whose outputs stay float (their consumers are LayerNorm, GELU, softmax, residual adds)
FLOAT_OUTPUT_OP_TYPES = ("MatMul", "Gemm")
CALIBRATION_BATCH = 16


def _namespace(node: onnx.NodeProto) -> str:
    return next((entry.value for entry in node.metadata_props if entry.key == "namespace"), "")


def head_nodes(model: onnx.ModelProto, head_scope: str) -> list[str]:
    """The head's nodes, found by the module scope torch's exporter writes into each node's metadata (the export
    names the scope, so calibration need not import it)."""
    names = [node.name for node in model.graph.node if head_scope in _namespace(node)]
    if not names:
        raise ClipedgeError("INT8: the ONNX graph carries no module scopes, so the head cannot be kept in float; "
                            "export it with `clipedge export` (torch's dynamo exporter records them)")
    return names


def activation_products(model: onnx.ModelProto) -> list[str]:
    """Matrix products of two activations (attention's Q·Kᵀ and A·V): no weight to quantize, and their inputs
    are the least forgiving of rounding. onnxruntime's QDQ quantizer (1.32, checked 2026-11) ignores
    ``MatMulConstBOnly`` in QDQ mode, so they are excluded by name."""
    constants = {tensor.name for tensor in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and not {node.input[0], node.input[1]} & constants]


def _calibration_reader(frames: np.ndarray, fixed_batch: int | None):
    """uint8 batches for the calibrator: CALIBRATION_BATCH frames, or exactly a fixed-batch model's N (the
    last batch padded with repeats). ``set_range`` lets onnxruntime collect one batch at a time, so
    calibration memory stays that of one batch's activations, whatever the image count."""
    from onnxruntime.quantization import CalibrationDataReader

    size = fixed_batch or CALIBRATION_BATCH
    batches = []
    for start in range(0, len(frames), size):
        chunk = frames[start : start + size]
        if fixed_batch and len(chunk) < fixed_batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - len(chunk), axis=0)])
        batches.append(np.ascontiguousarray(chunk))

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.pending, None)
            return None if chunk is None else {"images": chunk}

    return FrameReader()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization prints progress and logs advice on the root logger; keep the CLI's output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_qdq(model_path: Path, out_path: Path, frames: np.ndarray, method: str, keep_float: list[str],
                 fixed_batch: int | None = None, ranges: Path | None = None) -> None:
    """Calibrate ``model_path`` on ``frames`` with ``method`` and write the QDQ model to ``out_path``.

    ``ranges`` names a file for the activation ranges: written by the first call, read by later ones (with the
    same method), so re-quantizing with other layers in float costs a graph rewrite, not a calibration pass.
    The ranges cover every tensor whatever ``keep_float`` says, so one file serves every float choice."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with _quiet():
        quantize_static(
            str(model_path), str(out_path), _calibration_reader(frames, fixed_batch),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep_float,
            calibrate_method=methods[method], calibration_cache_path=ranges,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT dequantizes INT8 only; biases stay float for both
                "OpTypesToExcludeOutputQuantization": list(FLOAT_OUTPUT_OP_TYPES),
                # despite its name, every calibrator honours it: collect (and merge) one batch at a time
                "CalibStridedMinMax": 1,
            },
        )
