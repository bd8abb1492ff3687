"""Inference backends: one small interface, one module per backend, each imported only when used.

Importing a backend module imports its library (onnxruntime, tensorrt), so a
machine with only one of them installed can still run the other's models.
"""

from __future__ import annotations

from pathlib import Path

from clipedge.errors import ClipedgeError

from .base import Backend

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")


def open_backend(path: Path, providers: list[str] | None = None, threads: int | None = None,
                 cuda_graph: bool = False) -> Backend:
    """Pick the backend from the file name: .onnx → onnxruntime, .engine/.plan → TensorRT."""
    if not path.is_file():
        raise ClipedgeError(f"model {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers, threads)
    if suffix in ENGINE_SUFFIXES:
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, cuda_graph)
    raise ClipedgeError(f"model {path}: expected a .onnx model or a .engine/.plan TensorRT engine")


__all__ = ["Backend", "ENGINE_SUFFIXES", "ONNX_SUFFIXES", "open_backend"]
