"""What a Triton repository must state about an exported model, read from the model alone.

The contract comes from the ONNX metadata or the engine's sidecar, the output tensors from onnxruntime (an ONNX)
or the sidecar's classes (an engine, which cannot be opened without TensorRT), so a server without PyTorch or
TensorRT can describe a model to Triton.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipedge.core.errors import ClipedgeError

from ..contract import BatchProfile, ModelContract, model_metadata_of, parse_batch, read_contract

#: where the repository's model file lives and which Triton platform runs it, by the exported file's suffix
PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx"), ".engine": ("tensorrt_plan", "model.plan"),
             ".plan": ("tensorrt_plan", "model.plan")}
TRITON_DTYPES = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


@dataclass(frozen=True)
class ModelSignature:
    """What a repository must state about an exported model: its contract, tensors and batch range."""

    source: Path
    metadata: dict[str, str]
    contract: ModelContract
    #: output name → (Triton dtype, dims without the batch dimension)
    outputs: dict[str, tuple[str, list[int]]]
    #: None for a dynamic batch; the engine's profile or the fixed batch otherwise
    profile: BatchProfile | None

    @property
    def fixed_batch(self) -> int | None:
        return self.contract.fixed_batch


def read_signature(model: Path) -> ModelSignature:
    """The signature of an exported ``.onnx`` (tensors from onnxruntime) or ``.engine`` (from its sidecar)."""
    if not model.is_file():
        raise ClipedgeError(f"model {model}: no such file")
    if model.suffix.lower() not in PLATFORMS:
        raise ClipedgeError(f"model {model}: expected an exported .onnx model or a .engine/.plan TensorRT engine")
    metadata = model_metadata_of(model)
    contract = read_contract(metadata, model)
    if model.suffix.lower() == ".onnx":
        outputs = _onnx_outputs(model)
        profile = BatchProfile(*(contract.fixed_batch,) * 3) if contract.fixed_batch else None
    else:
        outputs = _engine_outputs(model, metadata, contract)
        profile = _engine_profile(model, metadata, contract)
    return ModelSignature(model, metadata, contract, outputs, profile)


def _onnx_outputs(model: Path) -> dict[str, tuple[str, list[int]]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the signature is read
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's pybind exceptions share no public base class
        raise ClipedgeError(f"model {model}: onnxruntime cannot load it ({str(error).strip().splitlines()[0]})") from None
    return {o.name: (TRITON_DTYPES.get(o.type, o.type), [int(d) for d in o.shape[1:]]) for o in session.get_outputs()}


def _engine_outputs(model: Path, metadata: dict[str, str], contract: ModelContract) -> dict[str, tuple[str, list[int]]]:
    """An engine cannot be opened without TensorRT; its sidecar records the classes but not the embedding width."""
    if "embeddings" in contract.outputs:
        raise ClipedgeError(f"model {model}: the sidecar does not record the embeddings width; write the repository "
                            "from the ONNX the engine was built from, or export the engine without --embeddings")
    classes = len(contract.class_names)
    return {name: ("TYPE_FP32", [classes]) for name in contract.outputs}


def _engine_profile(model: Path, metadata: dict[str, str], contract: ModelContract) -> BatchProfile:
    if contract.fixed_batch:
        return BatchProfile(*(contract.fixed_batch,) * 3)
    flags = json.loads(metadata.get("build_flags", "{}"))
    if "profile" not in flags:
        raise ClipedgeError(f"model {model}: its sidecar records no batch profile (build_flags.profile)")
    return parse_batch(flags["profile"], f"model {model}: build_flags.profile")
