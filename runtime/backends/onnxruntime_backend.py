"""onnxruntime backend: the best available provider, TensorRT EP, then CUDA EP, then CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from clipedge.errors import ClipedgeError

from .base import Backend

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def tensorrt_provider_options(cache_dir: Path, fp16: bool = True) -> dict[str, object]:
    """ONNX Runtime's TensorRT route: engines built on first run and cached beside the model."""
    return {
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }


def choose_providers(available: list[str], requested: list[str] | None) -> list[str]:
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ClipedgeError(f"--provider {missing[0]}: not available here (available: {', '.join(available)})")
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


class OnnxRuntimeBackend(Backend):
    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        if not path.is_file():
            raise ClipedgeError(f"model {path}: no such file")
        chosen = choose_providers(ort.get_available_providers(), providers)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        provider_list: list = []
        for provider in chosen:
            if provider == "TensorrtExecutionProvider":
                provider_list.append((provider, tensorrt_provider_options(path.parent / "trt-cache")))
            else:
                provider_list.append(provider)
        try:
            meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                        sess_options=_metadata_only()).get_modelmeta().custom_metadata_map
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise ClipedgeError(f"model {path}: not a valid ONNX model ({type(error).__name__})") from None
        if meta.get("precision") == "fp16" and chosen[0] == "CPUExecutionProvider":
            # onnxruntime's CPU graph fusions crash on fp16 transformer graphs; unfused they run correctly.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
        self.metadata = dict(meta)
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime:{self.provider}"
        self.input_name = self.session.get_inputs()[0].name
        dim = self.session.get_inputs()[0].shape[0]
        self.batch_range = (dim, dim) if isinstance(dim, int) else (1, None)
        log.info("running %s with %s", path.name, self.provider)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {self.input_name: images})))


def _metadata_only():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options
