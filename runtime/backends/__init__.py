"""Inference backends: one small interface, one module per backend, each imported only when used."""

from __future__ import annotations

from pathlib import Path

from clipedge.errors import ClipedgeError

from .base import Backend

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")


def open_backend(path: Path, providers: list[str] | None = None, threads: int | None = None, cuda_graph: bool = False) -> Backend:
    """Pick the backend from the file: .onnx → onnxruntime, .engine/.plan → TensorRT."""
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers, threads)
    if suffix in ENGINE_SUFFIXES:
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, cuda_graph)
    raise ClipedgeError(f"model {path}: expected a .onnx model or a .engine/.plan TensorRT engine")


__all__ = ["Backend", "open_backend"]
