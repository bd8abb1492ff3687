"""``clipedge export``: a run directory in, one checked artifact out (ONNX fp32/fp16, or a TensorRT engine).

Order matters: every input is validated before the slow work starts, and
nothing is written to its final name before the parity gate has passed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.backbone import load_backbone_from_spec
from clipedge.errors import ClipedgeError
from clipedge.run_dir import Run, load_run
from clipedge.training import resolve_device

from .batch import resolve_batch
from .files import check_destination, publish, staging_folder
from .fuse import FusedClassifier
from .metadata import calibration_of, model_metadata, set_onnx_metadata
from .onnx_export import OPSET, check_opset, to_onnx
from .parity import PARITY_IMAGES, ParityReference, ParityResult, compare, onnxruntime_probs, reference_outputs
from .tensorrt_build import (OPTIMIZATION_LEVEL, WORKSPACE_GIB, EngineSettings, build_engine, default_timing_cache,
                             engine_parity, gpu_identity, import_tensorrt)

FORMATS = ("onnx", "engine")


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
    #: other files written with the artifact: the engine's sidecar and the fp16 ONNX it was built from
    related: dict[str, Path] = field(default_factory=dict)


def default_artifact(run: Run, format: str, fp16: bool) -> Path:
    name = "model.engine" if format == "engine" else ("model.fp16.onnx" if fp16 else "model.onnx")
    return run.path / "export" / name


def _gate(parity: ParityResult, run: Run, what: str) -> None:
    if not parity.passed:
        raise ClipedgeError(
            f"export of {run.path}: the {what} failed its parity gate: {parity.describe()}; nothing was written")


def export_model(
    run_dir: str | Path,
    out: str | Path | None = None,
    format: str = "onnx",
    fp16: bool = False,
    batch: str | int | None = None,
    embeddings: bool = False,
    fixed_batch: bool = False,
    opset: int = OPSET,
    device: str = "cpu",
    parity_count: int = PARITY_IMAGES,
    timing_cache: str | Path | None = None,
    workspace_gib: float = WORKSPACE_GIB,
    optimization_level: int = OPTIMIZATION_LEVEL,
) -> ExportResult:
    """Fuse RUN's encoder and head, export, check parity on the run's images, then write the artifact.

    ``batch`` is N or "MIN,OPT,MAX" (the engine's optimisation profile); with ``fixed_batch`` the ONNX input
    is fixed to that one N instead of a dynamic batch. ``format="engine"`` implies fp16 (see tensorrt_build).
    """
    started = time.perf_counter()
    if format not in FORMATS:
        raise ClipedgeError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    check_opset(opset)
    if parity_count < 1:
        raise ClipedgeError(f"parity_count {parity_count}: expected at least 1 image")
    profile, static_batch = resolve_batch(batch, fixed_batch)
    run = load_run(run_dir)
    if format == "engine":
        import_tensorrt()
        gpu_identity()
        fp16 = True
    device = resolve_device(device)
    precision = "fp16" if fp16 else "fp32"
    artifact = Path(out) if out else default_artifact(run, format, fp16)
    if out is None:
        artifact.parent.mkdir(exist_ok=True)
    check_destination(artifact)

    spec = run.backbone_spec
    backbone = load_backbone_from_spec(spec, device)
    temperature = calibration_of(run).get("temperature")
    reference_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings)
    exported_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings,
                                      half_encoder=True) if fp16 else reference_module
    graph = to_onnx(exported_module, spec.image_size, static_batch, opset)
    model_bytes = graph.model.SerializeToString()
    reference = reference_outputs(run, backbone, reference_module, temperature, parity_count)
    exported_probs = onnxruntime_probs(model_bytes, precision, device, static_batch)(reference.frames)
    parity = compare(exported_probs, reference, precision)
    _gate(parity, run, "ONNX model")
    metadata = model_metadata(run, precision, embeddings, static_batch, graph.opset)
    set_onnx_metadata(graph.model, {**metadata, "parity": parity.to_dict()})

    onnx_path = artifact if format == "onnx" else artifact.with_name(f"{artifact.stem}.fp16.onnx")
    related: dict[str, Path] = {}
    with staging_folder(artifact) as staging:
        staged_onnx = staging / onnx_path.name
        staged_onnx.write_bytes(graph.model.SerializeToString())
        if format == "engine":
            settings = EngineSettings(profile, spec.image_size, workspace_gib, optimization_level,
                                      Path(timing_cache) if timing_cache else default_timing_cache())
            parity = _build_and_check_engine(run, staged_onnx, artifact, settings, metadata, parity, reference)
            related = {"sidecar": artifact.with_name(f"{artifact.name}.json"), "onnx": onnx_path}
        publish(staged_onnx, onnx_path)
    return ExportResult(artifact, format, precision, artifact.stat().st_size, graph.nodes_before, graph.nodes_after,
                        parity.to_dict(), time.perf_counter() - started, related)


def _build_and_check_engine(run: Run, staged_onnx: Path, artifact: Path, settings: EngineSettings,
                            metadata: dict[str, Any], onnx_parity: ParityResult, reference: ParityReference) -> ParityResult:
    """Build the engine next to the staged ONNX, gate it on the same frames, then publish it with its sidecar."""
    staged_engine = staged_onnx.with_name(artifact.name)
    sidecar = staged_onnx.with_name(f"{artifact.name}.json")  # the runtime's TensorRT backend reads it
    facts = {**metadata, **build_engine(staged_onnx, staged_engine, settings), "onnx_parity": onnx_parity.to_dict()}
    sidecar.write_text(json.dumps(facts, indent=2) + "\n")
    parity = engine_parity(staged_engine, reference, "fp16")
    _gate(parity, run, "TensorRT engine")
    sidecar.write_text(json.dumps({**facts, "parity": parity.to_dict()}, indent=2) + "\n")
    publish(sidecar, artifact.with_name(sidecar.name))
    publish(staged_engine, artifact)
    return parity
