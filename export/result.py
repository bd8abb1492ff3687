"""What every export returns, and the one rule for a failed gate: one line, and nothing written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError
from clipedge.run_dir import Run

from .parity import ParityResult


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how it checked out."""

    artifact: Path
    format: str
    precision: str
    size_bytes: int
    nodes_before: int
    nodes_after: int
    parity: dict[str, Any]
    seconds: float
    #: other files written with the artifact: the engine's sidecar and the ONNX it was built from
    related: dict[str, Path] = field(default_factory=dict)
    #: INT8 only: calibration method, images, selection figures, layers in INT8 (Int8Model.metadata)
    quantization: dict[str, Any] | None = None
    #: engines only: the built engine against the reference set embedded in its ONNX
    engine_gate: dict[str, Any] | None = None
    #: --adaptable only: the text model against open_clip's text encoder (clipedge.export.text_model.TextParity)
    text_gate: dict[str, Any] | None = None


def require_parity(parity: ParityResult, run: Run, what: str, advice: str = "") -> None:
    if not parity.passed:
        raise ClipedgeError(
            f"export of {run.path}: the {what} failed its parity gate: {parity.describe()}; nothing was written{advice}")
