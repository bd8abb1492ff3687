"""``clipedge export``: a run directory in, one checked artifact out (ONNX fp32/fp16/int8, or a TensorRT engine).

Order matters: every input is validated before the slow work starts, and
nothing is written to its final name before the parity gate and the static
TensorRT check have passed. An engine is built from the exported ONNX by the
runtime's torch-free ``build_engine`` (what ``clipedge engine`` runs on a
device), so the ONNX carries its batch profile and a small reference set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import onnx

from clipedge.backbone import load_backbone_from_spec
from clipedge.calibration.int8 import quantize_int8
from clipedge.calibration.int8_gate import AgreementGate
from clipedge.calibration.int8_images import calibration_images
from clipedge.core.atomic import check_destination, publish, staging_folder
from clipedge.core.images import DecodeOptions
from clipedge.devices import resolve_device
from clipedge.run_dir import Run, load_run
from clipedge.run_features import run_decoding
from clipedge.runtime.backends.tensorrt_environment import current_gpu, import_cudart, import_tensorrt
from clipedge.runtime.contract import BATCH_PROFILE_KEY, REFERENCE_KEY, sidecar_path
from clipedge.runtime.preprocessing.transform import prepare_files
from clipedge.runtime.tensorrt.check import require_tensorrt_compatible
from clipedge.runtime.tensorrt.engine_build import build_engine

from .batch import resolve_batch
from .frame_input import FrameClassifier
from .fuse import HEAD_SCOPE, FusedClassifier
from .metadata import calibration_of, model_metadata, set_onnx_metadata
from .onnx_export import to_onnx
from .options import ExportOptions
from .parity import (
    ParityReference,
    ParityResult,
    compare,
    frame_reference_outputs,
    onnxruntime_probs,
    parity_images,
    reference_outputs,
    reference_set,
)
from .result import ExportResult, require_parity


def default_artifact(run: Run, format: str, precision: str) -> Path:
    """RUN/export/model.onnx, model.fp16.onnx, model.int8.onnx, or the same names ending in .engine."""
    suffix = "" if precision == "fp32" else f".{precision}"
    return run.path / "export" / f"model{suffix}.{'engine' if format == 'engine' else 'onnx'}"


def engine_onnx_path(engine: Path) -> Path:
    """The ONNX an engine is built from, kept beside it with the same stem: model.fp16.engine → model.fp16.onnx
    (where `clipedge engine` puts an engine, and where the runtime looks for the contract of a foreign one)."""
    return engine.with_suffix(".onnx")


def export_model(run_dir: str | Path, out: str | Path | None = None, options: ExportOptions | None = None,
                 **overrides: Any) -> ExportResult:
    """Export RUN in the format ``options.format`` names (the keyword arguments are :class:`ExportOptions` fields,
    e.g. ``export_model(run, "repo", format="triton")``): validated once, then built by the function that the
    format's row of :data:`~clipedge.export.formats.FORMATS` names."""
    options = ExportOptions.of(options, **overrides, **({"out": Path(out)} if out is not None else {}))
    return options.validate().build(run_dir, options)


def export_fused(run_dir: str | Path, options: ExportOptions) -> ExportResult:
    """``--format onnx`` and ``--format engine``: fuse RUN's encoder and head, export, check parity on the run's
    images, then write the artifact.

    ``batch`` is N or "MIN,OPT,MAX" (the engine's optimisation profile, recorded in the ONNX); with
    ``fixed_batch`` the ONNX input is fixed to that one N instead of a dynamic batch. With ``int8`` the INT8 QDQ
    model (clipedge.calibration.int8) is exported and gated against fp32 on every image calibration did not see.
    ``format="engine"`` builds a strongly typed TensorRT engine from the ONNX of the precision asked for with the
    runtime's ``build_engine``, and keeps that ONNX beside it. ``frame="1920x1080"`` makes the input the raw camera frame in ``pixel_format`` (rgb, bgr,
    nv12 with ``colour_matrix``) with colour conversion, resize and crop in the graph
    (clipedge.export.frame_input), gated on the run's images placed in such frames.
    """
    if options.adaptable:  # --format onnx's classes-as-data variant
        from .adaptable import export_adaptable

        return export_adaptable(run_dir, options)
    started = time.perf_counter()
    format, out, fp16, embeddings, opset = options.format, options.out, options.fp16, options.embeddings, options.opset
    frame_input, int8, progress = options.frame_input(), options.int8_options(), options.progress
    profile, static_batch = resolve_batch(options.batch, options.fixed_batch)
    run = load_run(run_dir)
    if format == "engine":  # fail in a second, not after the export
        import_tensorrt()
        current_gpu(import_cudart())
    device = resolve_device(options.device)
    precision = options.precision
    artifact = Path(out) if out else default_artifact(run, format, precision)
    if out is None:
        artifact.parent.mkdir(exist_ok=True)
    check_destination(artifact)
    if int8:  # read (and check) every image before the slow work
        images = calibration_images(run, int8.calib_dir, int8.count, int8.seed)

    spec = run.backbone_spec
    backbone = load_backbone_from_spec(spec, device)
    temperature = calibration_of(run).get("temperature")
    reference_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings)
    exported_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature, embeddings,
                                      half_encoder=True) if fp16 else reference_module
    if frame_input:
        exported_module = FrameClassifier(exported_module, frame_input, spec.image_size, spec.interpolation,
                                          spec.resize_mode)
    graph = to_onnx(exported_module, spec.image_size, static_batch, opset,
                    frame_input.sample_shape if frame_input else None)
    metadata = {**model_metadata(run, precision, embeddings, static_batch, graph.opset, frame_input),
                BATCH_PROFILE_KEY: str(profile)}
    paths = parity_images(run, options.parity_count)
    reference = (frame_reference_outputs(run, backbone, reference_module, temperature, paths, frame_input)
                 if frame_input else reference_outputs(run, backbone, reference_module, temperature, paths))
    onnx_path = artifact if format == "onnx" else engine_onnx_path(artifact)
    related: dict[str, Path] = {}
    quantization = engine_gate = None
    with staging_folder(artifact) as staging:
        graph_onnx = staging / ("fp32.onnx" if int8 else onnx_path.name)
        set_onnx_metadata(graph.model, {**metadata, "precision": "fp16" if fp16 else "fp32"})
        onnx.save(graph.model, str(graph_onnx))
        model_probs = onnxruntime_probs(graph_onnx, device)
        parity = graph_parity = compare(model_probs(reference.frames), reference, "fp16" if fp16 else "fp32", temperature)
        require_parity(graph_parity, run, "ONNX model")
        if not frame_input:  # the runtime's fast CPU resize, measured on the same images (recorded, not gated)
            metadata["fast_resize_parity"] = compare(model_probs(fast_resized_frames(reference.paths, spec, run_decoding(run))), reference,
                                                     "fp16" if fp16 else "fp32", temperature).to_dict()
        staged_onnx = staging / onnx_path.name
        if int8:
            reference = reference_outputs(run, backbone, reference_module, temperature, images.gate_paths)
            gate = AgreementGate(reference.frames, (reference.fused, reference.pipeline), int8.min_agreement)
            quantized = quantize_int8(graph_onnx, staged_onnx, images, _cpu_probs, gate, int8.method, static_batch,
                                      progress, head_scope=HEAD_SCOPE)
            quantization = quantized.metadata()
            metadata = {**metadata, "quantization": quantization, "fp32_parity": graph_parity.to_dict()}
            model = onnx.load(str(staged_onnx))
            set_onnx_metadata(model, metadata)  # the gate below runs the model as the runtime sees it
            onnx.save(model, str(staged_onnx))
            parity = _gate_int8(run, _cpu_probs(staged_onnx, reference.frames), reference, temperature, int8.min_agreement)
        else:
            model = graph.model
        references = reference_set(reference, precision, temperature, int8.min_agreement if int8 else None)
        set_onnx_metadata(model, {**metadata, "parity": parity.to_dict(), REFERENCE_KEY: references.encode()})
        onnx.save(model, str(staged_onnx))
        require_tensorrt_compatible(staged_onnx, onnx_path)
        if format == "engine":
            build = build_engine(staged_onnx, staging / artifact.name, timing_cache=options.timing_cache,
                                 workspace_gib=options.workspace_gib, optimization_level=options.optimization_level)
            engine_gate = build.gate
            publish(build.sidecar, sidecar_path(artifact))
            publish(build.engine, artifact)
            related = {"sidecar": sidecar_path(artifact), "onnx": onnx_path}
        publish(staged_onnx, onnx_path)
    return ExportResult(artifact, format, precision, artifact.stat().st_size, graph.nodes_before, graph.nodes_after,
                        parity.to_dict(), time.perf_counter() - started, related, quantization, engine_gate)


def fast_resized_frames(paths: list[Path], spec: Any, decoding: DecodeOptions) -> Any:
    """The parity images through the runtime's fast resize (``resize_quality="fast"``), at model size; a file
    the reference could not decode fails here too, so the frames line up with the reference's."""
    frames, _ = prepare_files(paths, spec.image_size, spec.interpolation, spec.resize_mode, quality="fast",
                              decoding=decoding)
    return frames


def _cpu_probs(model_path: Path, frames: Any) -> Any:
    """An INT8 model is judged where its integer kernels run: onnxruntime's CPU provider (a GPU provider
    would dequantize and compute in float, which is not what a CPU deployment gets)."""
    return onnxruntime_probs(model_path, "cpu")(frames)


def _gate_int8(run: Run, probs: Any, reference: ParityReference, temperature: float | None,
               min_agreement: float) -> ParityResult:
    """The written INT8 model against the fp32 PyTorch pipelines on every image calibration did not see."""
    parity = compare(probs, reference, "int8", temperature, min_agreement)
    resolution = f" (with {parity.images} images, one disagreement costs {100 / parity.images:.1f} %)" \
        if parity.images < 100 else ""
    require_parity(parity, run, "INT8 model", f"{resolution}. This run's decisions turn on logit differences finer than INT8 "
          "resolves: export fp32 or --fp16 instead, calibrate on more representative images (--calib), or accept "
          "less agreement (--min-agreement)")
    return parity
