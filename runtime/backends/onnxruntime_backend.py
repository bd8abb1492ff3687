"""onnxruntime backend: the best available provider (TensorRT EP, then CUDA EP, then CPU), or the caller's.

The provider that actually runs the model is reported as ``provider`` (and in
``name``) and logged, because onnxruntime silently falls back to the CPU when
a GPU provider fails to initialise.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.onnxruntime_options import (
    TENSORRT_PROVIDER,
    cpu_graph_optimization,
    tensorrt_provider_options,
)
from clipedge.runtime.contract.onnx_metadata import onnx_metadata_of, read_external_data

from ..contract import (
    frame_input_of,
    recorded_batch_profile,
    score_output,
)
from .base import Backend

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = (TENSORRT_PROVIDER, "CUDAExecutionProvider", "CPUExecutionProvider")
ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


def tensorrt_options(path: Path, metadata: dict[str, str]) -> dict[str, str]:
    """ONNX Runtime's TensorRT route: engines built on first run and cached beside the model, strongly typed,
    one profile over the batch range the model was exported for (contract.recorded_batch_profile), never the
    caller's batch size: another shape outside the cached profile would rebuild the engine (onnxruntime#16889)."""
    cache = path.parent / "trt-cache"
    if "image_size" not in metadata:  # not a clipedge export: no input contract to build a profile from
        return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return tensorrt_provider_options(cache, int(metadata["image_size"]), recorded_batch_profile(metadata),
                                     frame=frame_input_of(metadata))


def check_external_data(path: Path) -> None:
    """Refuse a model whose external weight files are missing or short, naming them: onnxruntime's own error
    for that is a shape-inference failure on the first tensor it cannot read."""
    for location, needed in read_external_data(path).items():
        data = path.parent / location
        if not data.is_file():
            raise ClipedgeError(f"model {path}: its weights live in {location}, which is missing beside it; "
                                "copy that file next to the model")
        if data.stat().st_size < needed:
            raise ClipedgeError(f"model {path}: external data {location} is truncated "
                                f"({data.stat().st_size} bytes, the model reads up to {needed})")


Provider = str | tuple[str, dict[str, str]]


def _provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def shadowed_gpu_build(available: list[str]) -> str:
    """Why the GPU providers are missing when onnxruntime-gpu is installed, or "": pip installs onnxruntime and
    onnxruntime-gpu side by side although both ship the one ``onnxruntime`` module, and the CPU wheel installed
    after the GPU one (``pip install 'clipedge[gpu]'`` does that) leaves only the CPU provider."""
    if "CUDAExecutionProvider" in available or not (_installed("onnxruntime-gpu") and _installed("onnxruntime")):
        return ""
    return ("onnxruntime and onnxruntime-gpu are both installed and share one module, the CPU build's here: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")


def choose_providers(available: list[str], requested: list[Provider] | None) -> list[Provider]:
    """The caller's providers (names, or (name, options) pairs; each must be installed), else the preferred
    ones that are installed."""
    shadowed = shadowed_gpu_build(available)
    if requested:
        missing = [_provider_name(p) for p in requested if _provider_name(p) not in available]
        if missing:
            raise ClipedgeError(f"provider {missing[0]}: not available here (available: {', '.join(available)})"
                                + (f"; {shadowed}" if shadowed else ""))
        return list(requested)
    if shadowed:
        log.warning("running on the CPU: %s", shadowed)
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) else None


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` over a clipedge ONNX model."""

    def __init__(self, path: Path, providers: list[Provider] | None = None, threads: int | None = None):
        import onnxruntime as ort

        metadata = onnx_metadata_of(path)
        check_external_data(path)
        chosen = choose_providers(ort.get_available_providers(), providers)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if _provider_name(chosen[0]) == "CPUExecutionProvider":
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                       cpu_graph_optimization(metadata.get("precision")))
        provider_list = [(p, tensorrt_options(path, metadata)) if p == TENSORRT_PROVIDER else p for p in chosen]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
        except Exception as error:  # noqa: BLE001 - onnxruntime's pybind exceptions share no public base class
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ClipedgeError(f"model {path}: onnxruntime cannot load it ({first_line})") from None
        self.metadata = metadata
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime:{self.provider}"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = tuple(_dim(d) for d in model_input.shape)
        self.input_dtype = ORT_DTYPES.get(model_input.type, model_input.type)
        self.output_names = [o.name for o in self.session.get_outputs()]
        scores = {o.name: o for o in self.session.get_outputs()}.get(score_output(self.output_names) or "")
        self.num_classes = _dim(scores.shape[-1]) if scores is not None and scores.shape else None
        batch = self.input_shape[0] if self.input_shape else None
        self.batch_range = (batch, batch) if batch else (1, None)
        if self.provider == TENSORRT_PROVIDER and "image_size" in metadata:  # chunks within the cached profile
            profile = recorded_batch_profile(metadata)
            self.batch_range = (profile.min, profile.max)
        log.info("running %s with onnxruntime's %s", path.name, self.provider)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: images})))

    def close(self) -> None:
        self.session = None
