"""Small ONNX models built to the export contract, for tests of the torch-free runtime and of predict.

The models are real ONNX graphs honouring the contract (uint8 NHWC ``images`` in; ``logits`` and ``probs``
out; clipedge ``metadata_props``): Cast → mean colour over H, W → MatMul → Softmax. With an identity-like class
matrix a red image is "red", so results can be checked by meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

COLOURS = ["red", "green", "blue"]


SIZE = 16


def contract_onnx(path: Path, metadata: dict[str, str] | None = None, size: int = SIZE, classes: int = 3,
                  fixed_batch: int | None = None, input_type: int = TensorProto.UINT8) -> Path:
    """An ONNX model honouring the export contract: class i scores the mean of colour channel i (mod 3)."""
    batch = fixed_batch or "N"
    images = helper.make_tensor_value_info("images", input_type, [batch, size, size, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])
    weights = np.zeros((3, classes), np.float32)
    weights[np.arange(classes) % 3, np.arange(classes)] = 0.1
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["colour"], keepdims=0),
        helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    initializers = [onnx.numpy_helper.from_array(weights, "weights"),
                    onnx.numpy_helper.from_array(np.array([1, 2], np.int64), "axes")]
    model = helper.make_model(helper.make_graph(nodes, "contract", [images], [logits, probs], initializers),
                              opset_imports=[helper.make_opsetid("", 18)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def clipedge_metadata(**extra: str) -> dict[str, str]:
    return {"class_names": json.dumps(COLOURS), "image_size": str(SIZE), "interpolation": "bicubic",
            "input": json.dumps({"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                                 "shape": ["N", SIZE, SIZE, 3]}),
            "outputs": json.dumps(["logits", "probs"]), "resize_mode": "shortest", "method": "zero-shot",
            "precision": "fp32", "clipedge_version": "test", "source_run": "/nowhere", **extra}


def solid(colour: str, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    frame = np.full((height, width, 3), 30, np.uint8)
    frame[..., COLOURS.index(colour)] = 220
    return frame


def plain_classifier_onnx(path: Path, output: str = "scores", input_type: int = TensorProto.UINT8) -> Path:
    """A model from elsewhere: no clipedge metadata, one output of logits under its own name."""
    model = onnx.load(str(contract_onnx(path, input_type=input_type)))
    del model.graph.output[1]
    del model.graph.node[-1]  # no softmax: the runtime computes probabilities from the one output
    model.graph.node[-1].output[0] = output
    model.graph.output[0].name = output
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


BLOCK_TORCH = """
import importlib.abc, sys
from pathlib import Path
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is blocked: the runtime must not need it")
sys.meta_path.insert(0, BlockTorch())
"""
