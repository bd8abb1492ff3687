"""Reading a model file's contract: the one place that says a file is not a model clipedge can run."""

from __future__ import annotations

from pathlib import Path

from .metadata import encode_metadata
from .onnx_metadata import onnx_metadata_of
from .sidecar import foreign_engine_metadata, read_sidecar, sidecar_path


def model_metadata_of(path: Path) -> dict[str, str]:
    """The string metadata of an ONNX model (``metadata_props``) or an engine (its sidecar)."""
    if path.suffix.lower() == ".onnx":
        return onnx_metadata_of(path)
    if sidecar_path(path).is_file():
        return encode_metadata(read_sidecar(path))
    return foreign_engine_metadata(path)
