"""Inference backends: one small interface, one module per backend, each imported only when used.

Importing a backend module imports its library (onnxruntime, tensorrt), so a
machine with only one of them installed can still run the other's models.
"""

from __future__ import annotations

from pathlib import Path

from clipedge.core.errors import ClipedgeError

from .base import Backend

ONNX_SUFFIXES = (".onnx",)
SERVER_SCHEMES = ("grpc://", "http://")
ENGINE_SUFFIXES = (".engine", ".plan")


def is_server_url(model: str | Path) -> bool:
    """A model on a Triton server (``grpc://host:port/NAME``, ``http://host:port/NAME``) rather than a file."""
    return isinstance(model, str) and model.startswith(SERVER_SCHEMES)


def open_backend(path: Path | str, providers: list[str] | None = None, threads: int | None = None,
                 cuda_graph: bool = False) -> Backend:
    """Pick the backend from the file name: .onnx → onnxruntime, .engine/.plan → TensorRT; a server URL → Triton."""
    if is_server_url(path):
        from clipedge.runtime.backends.triton_backend import TritonBackend

        return TritonBackend(path)
    path = Path(path)
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


__all__ = ["Backend", "ENGINE_SUFFIXES", "ONNX_SUFFIXES", "SERVER_SCHEMES", "is_server_url", "open_backend"]
