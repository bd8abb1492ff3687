"""Fusion of backbone and head into one graph, its ONNX/TensorRT export and the parity gate.

Kept import-light: ``export_model`` (and with it torch and onnx) loads on first
use. What the runtime must also know (names, metadata, sidecar, batch profile,
onnxruntime's TensorRT options) lives in ``clipedge.runtime.contract``.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "export_model": "clipedge.export.exporter",
    "ExportResult": "clipedge.export.exporter",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipedge.export' has no attribute {name!r}")


__all__ = sorted(_LAZY)
