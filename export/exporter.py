"""``clipedge export``: a run directory in, one checked artifact out (ONNX fp32/fp16, or a TensorRT engine)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.backbone import load_backbone_from_spec
from clipedge.errors import ClipedgeError
from clipedge.run_dir import Run, load_run
from clipedge.version import __version__

from .batch import DEFAULT_BATCH, parse_batch
from .fuse import FusedClassifier
from .onnx_export import INPUT_NAME, OPSET, set_metadata, to_onnx
from .parity import PARITY_IMAGES, check_parity
from .tensorrt_build import EngineSettings, build_engine, gpu_identity, import_tensorrt, write_atomically, write_sidecar

FORMATS = ("onnx", "engine")


@dataclass
class ExportResult:
    artifact: Path
    format: str
    precision: str
    size_bytes: int
    nodes_before: int
    nodes_after: int
    parity: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def default_artifact(run: Run, format: str, fp16: bool) -> Path:
    name = "model.engine" if format == "engine" else ("model.fp16.onnx" if fp16 else "model.onnx")
    return run.path / "export" / name


def _check_destination(out: Path) -> None:
    if out.is_dir():
        raise ClipedgeError(f"--out {out}: is a directory; give a file name such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise ClipedgeError(f"--out {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ClipedgeError(f"--out {out}: folder {out.parent} is not writable")


def model_metadata(run: Run, precision: str, embeddings: bool) -> dict[str, Any]:
    spec = run.backbone_spec
    calibration = run.manifest.get("calibration") or {}
    metadata: dict[str, Any] = {
        "class_names": run.class_names,
        "image_size": str(spec.image_size),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                  "shape": ["N", spec.image_size, spec.image_size, 3]},
        "outputs": ["logits", "probs", *(["embeddings"] if embeddings else [])],
        "interpolation": spec.interpolation,
        "resize_mode": spec.resize_mode,
        "backbone": spec.name,
        "method": run.method,
        "source_run": str(run.path.resolve()),
        "clipedge_version": __version__,
        "precision": precision,
    }
    if calibration:
        metadata["temperature"] = str(calibration["temperature"])
        metadata["rejection_score"] = calibration["rejection_score"]
        metadata["rejection_threshold"] = str(calibration["threshold"])
    return metadata


def export_model(
    run_dir: str | Path,
    out: str | Path | None = None,
    format: str = "onnx",
    fp16: bool = False,
    batch: str = DEFAULT_BATCH,
    fixed_batch: int | None = None,
    embeddings: bool = False,
    opset: int = OPSET,
    parity_count: int = PARITY_IMAGES,
    timing_cache: str | Path | None = None,
) -> ExportResult:
    """Fuse, export, gate on parity, and only then write the artifact (temporary name, then rename)."""
    started = time.perf_counter()
    if format not in FORMATS:
        raise ClipedgeError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    profile = parse_batch(batch)
    if fixed_batch is not None and fixed_batch < 1:
        raise ClipedgeError(f"--fixed-batch {fixed_batch}: expected a batch size of at least 1")
    run = load_run(run_dir)
    if format == "engine":
        import_tensorrt()
        gpu_identity()
        fp16 = True  # engines are built from the fp16 ONNX: that is the point of TensorRT here
    precision = "fp16" if fp16 else "fp32"
    artifact = Path(out) if out else default_artifact(run, format, fp16)
    if out is None:
        artifact.parent.mkdir(exist_ok=True)
    _check_destination(artifact)

    spec = run.backbone_spec
    backbone = load_backbone_from_spec(spec)
    temperature = (run.manifest.get("calibration") or {}).get("temperature")
    fused = FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings, half_encoder=fp16)
    graph = to_onnx(fused, spec.image_size, fixed_batch, opset)
    reference = fused if not fp16 else FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings)
    parity = check_parity(graph.model.SerializeToString(), precision, reference, backbone, run, temperature, parity_count,
                          fixed_batch)
    if not parity.passed:
        raise ClipedgeError(f"export of {run.path} failed its parity gate: {parity.describe()}; nothing was written")
    metadata = {**model_metadata(run, precision, embeddings), "parity": parity.to_dict()}
    set_metadata(graph.model, metadata)
    onnx_path = artifact if format == "onnx" else artifact.with_suffix(".fp16.onnx")
    write_atomically(onnx_path, graph.model.SerializeToString())
    extra: dict[str, Any] = {}
    if format == "engine":
        settings = EngineSettings(profile, spec.image_size, timing_cache=Path(timing_cache) if timing_cache else artifact.with_name("timing.cache"))
        facts = build_engine(onnx_path, artifact, settings)
        extra["sidecar"] = str(write_sidecar(artifact, {**metadata, **facts}))
        extra["onnx"] = str(onnx_path)
    return ExportResult(artifact, format, precision, artifact.stat().st_size, graph.nodes_before, graph.nodes_after,
                        parity.to_dict(), time.perf_counter() - started, extra)
