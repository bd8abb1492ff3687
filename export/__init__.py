"""Fusion of backbone and head into one graph, its ONNX/TensorRT export and the parity gate.

Kept import-light: ``export_model`` (and with it torch) loads on first use.
"""

from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("export_model", "ExportResult"):
        return getattr(import_module("clipedge.export.exporter"), name)
    raise AttributeError(f"module 'clipedge.export' has no attribute {name!r}")


__all__ = ["ExportResult", "export_model"]
