"""``clipedge export RUN --format deepstream``: a folder a DeepStream pipeline's Gst-nvinfer loads as a classifier.

Gst-nvinfer feeds a network float32 planes it computed as ``net-scale-factor · (pixel − offsets[c])``: one
scalar scale for all channels, so CLIP's per-channel std cannot be expressed there, and it never hands a
network uint8 NHWC frames. The exported variant therefore takes float32 RGB [N, 3, S, S] in 0–255 (scale
1, offsets 0) and keeps the normalisation in the graph (the same ``FusedClassifier.classify`` the uint8
model wraps), with ``probs`` as its only output: nvinfer's classifier parser reads softmax outputs.

What runs here: the ONNX export and the parity gate (onnxruntime on the run's images, fed the float NCHW
transpose of the gate's frames, against the PyTorch pipelines). What cannot run here (nvinfer, its
TensorRT build) is checked statically: the config keys against nvinfer's property table
(clipedge.export.nvinfer_config).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from clipedge.backbone import BackboneSpec, load_backbone_from_spec
from clipedge.core.images import DecodeOptions
from clipedge.devices import resolve_device
from clipedge.run_dir import Run, check_output_dir, load_run, staged_run_dir
from clipedge.run_features import run_decoding
from clipedge.runtime.contract import LABELS_FILE, NVINFER_INPUT_NAME, NVINFER_OUTPUT_NAMES
from clipedge.runtime.preprocessing.transform import prepare_files
from clipedge.runtime.tensorrt.check import require_tensorrt_compatible

from .deepstream_config import (
    DETECTOR_GIE_ID,
    GIE,
    MODEL_FILE,
    Geometry,
    Threshold,
    batch_sizes,
    config_entries,
    config_file,
    geometry_for,
    threshold_for,
)
from .fuse import FusedClassifier
from .metadata import calibration_of, model_metadata, set_onnx_metadata
from .nvinfer_config import classifier_labels, render_config
from .onnx_export import trace_to_onnx
from .options import PROCESS_MODES, ExportOptions
from .parity import (
    ParityResult,
    ProbsFunction,
    compare,
    onnxruntime_probs,
    parity_images,
    reference_outputs,
)
from .result import ExportResult, require_parity

log = logging.getLogger(__name__)

README_FILE = "README.md"

class NvinferClassifier(nn.Module):
    """float32 RGB planes [N, 3, S, S] in 0–255 → probs [N, C]: the fused graph without its uint8 adapter."""

    def __init__(self, fused: FusedClassifier):
        super().__init__()
        self.fused = fused

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fused.classify(pixels)[1]


def nvinfer_input(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB frames [N, S, S, 3] as nvinfer would feed them with scale 1 and offsets 0: float32 [N, 3, S, S]."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)


def export_deepstream(run_dir: str | Path, options: ExportOptions) -> ExportResult:
    """Export the float NCHW variant, gate it, and publish OUT/model.onnx, labels.txt, config_infer_*.txt and
    README.md together (a staging folder renamed into place), refusing a non-empty OUT unless ``overwrite``."""
    started = time.perf_counter()
    out, fp16, overwrite, opset = options.out, options.fp16, options.overwrite, options.opset
    modes = PROCESS_MODES[options.process_mode or "both"]
    batches = batch_sizes(options.batch, modes)
    run = load_run(run_dir)
    labels = classifier_labels(run.class_names, f"RUN {run.path}")
    folder = Path(out) if out else run.path / "export" / "deepstream"
    if out is None:
        folder.parent.mkdir(exist_ok=True)
    check_output_dir(folder, overwrite)
    spec = run.backbone_spec
    precision = "fp16" if fp16 else "fp32"
    geometry = geometry_for(spec.resize_mode, spec.image_size)
    threshold = threshold_for(run)
    header = [f"Gst-nvinfer config written by clipedge for {run.path.name} ({len(run.class_names)} classes, "
              f"{precision}); keys checked against nvinfer's documented property table"]
    configs = {mode: render_config(config_entries(mode, batches[mode], precision, spec.image_size, geometry, threshold),
                                   header) for mode in modes}  # rendered (and so checked) before the slow work
    for warning in (geometry.caveat, threshold.warning):
        if warning:
            log.warning("deepstream: %s", warning)

    device = resolve_device(options.device)
    backbone = load_backbone_from_spec(spec, device)
    temperature = calibration_of(run).get("temperature")
    reference_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature)
    exported = FusedClassifier(backbone.model.visual, run.head, spec, temperature, half_encoder=True) \
        if fp16 else reference_module
    example = torch.zeros(2, 3, spec.image_size, spec.image_size, device=exported.device)
    graph = trace_to_onnx(NvinferClassifier(exported), example, NVINFER_INPUT_NAME, list(NVINFER_OUTPUT_NAMES),
                          dynamic_batch=True, opset=opset)
    paths = parity_images(run, options.parity_count)
    reference = reference_outputs(run, backbone, reference_module, temperature, paths)
    metadata = {
        **model_metadata(run, precision, False, None, graph.opset),
        "input": {"name": NVINFER_INPUT_NAME, "dtype": "float32", "layout": "NCHW", "channels": "RGB",
                  "range": [0, 255], "shape": ["N", 3, spec.image_size, spec.image_size]},
        "outputs": list(NVINFER_OUTPUT_NAMES),
    }
    with staged_run_dir(folder, overwrite) as staging:
        model_path = staging / MODEL_FILE
        set_onnx_metadata(graph.model, metadata)
        onnx.save(graph.model, str(model_path))
        require_tensorrt_compatible(model_path, folder / MODEL_FILE)  # nvinfer builds its engine with TensorRT
        probs = onnxruntime_probs(model_path, device)
        parity = compare(probs(nvinfer_input(reference.frames)), reference, precision, temperature)
        require_parity(parity, run, "DeepStream ONNX model")
        facts = {"configs": {m: {"process_mode": GIE[m].process_mode, "batch_size": batches[m]} for m in modes},
                 "maintain_aspect_ratio": geometry.maintain_aspect_ratio, "classifier_threshold": threshold.value}
        if geometry.caveat:
            facts["letterbox_agreement"] = letterbox_agreement(probs, reference.paths, reference.fused, spec, run_decoding(run))
        set_onnx_metadata(graph.model, {**metadata, "parity": parity.to_dict(), "deepstream": facts})
        onnx.save(graph.model, str(model_path))
        (staging / LABELS_FILE).write_text(labels, encoding="utf-8")
        for mode, text in configs.items():
            (staging / config_file(mode)).write_text(text, encoding="utf-8")
        readme = deepstream_readme(run, precision, modes, batches, parity, geometry, threshold,
                                   facts.get("letterbox_agreement"))
        (staging / README_FILE).write_text(readme, encoding="utf-8")
    related = {"labels": folder / LABELS_FILE, **{config_file(m)[:-4]: folder / config_file(m) for m in modes},
               "readme": folder / README_FILE}
    artifact = folder / MODEL_FILE
    return ExportResult(artifact, "deepstream", precision, artifact.stat().st_size, graph.nodes_before,
                        graph.nodes_after, parity.to_dict(), time.perf_counter() - started, related)


def letterbox_agreement(probs: ProbsFunction, paths: list[Path], fused: np.ndarray,
                        spec: BackboneSpec, decoding: DecodeOptions) -> dict[str, float | int]:
    """How often the model's top-1 on letterboxed frames (nvinfer's geometry, resampled by PIL here) equals its
    top-1 on the centre crops it was trained on: what the 'shortest' caveat costs on this run's images."""
    frames, _ = prepare_files(paths, spec.image_size, spec.interpolation, "longest", decoding=decoding)
    agreement = float((probs(nvinfer_input(frames)).argmax(1) == fused.argmax(1)).mean())
    return {"images": len(frames), "top1_agreement": agreement}


def deepstream_readme(run: Run, precision: str, modes: tuple[str, ...], batches: dict[str, int], parity: ParityResult,
                      geometry: Geometry, threshold: Threshold, letterbox: dict | None) -> str:
    """The folder's README: what each file is, how to load it, what was run here and what was only checked."""
    size = run.backbone_spec.image_size
    configs = "\n".join(f"| `{config_file(m)}` | Gst-nvinfer config, process-mode={GIE[m].process_mode} ({m}), "
                        f"batch-size={batches[m]}, gie-unique-id={GIE[m].unique_id}"
                        + (f", operate-on-gie-id={DETECTOR_GIE_ID}" if m == "secondary" else "") + " |" for m in modes)
    lines = [
        f"# DeepStream classifier exported by clipedge from `{run.path.name}`",
        "",
        "| file | what |",
        "|---|---|",
        f"| `{MODEL_FILE}` | {precision} ONNX: input `{NVINFER_INPUT_NAME}` float32 [N, 3, {size}, {size}] RGB in "
        "0-255 (normalisation inside the graph), output `probs` [N, C] |",
        f"| `{LABELS_FILE}` | the {len(run.class_names)} class names on one line, separated by `;` (nvinfer's "
        "classifier label format), in output order |",
        configs,
        "",
        "## Use",
        "",
        "Point nvinfer at a config: `nvinfer config-file-path=config_infer_secondary.txt` in a pipeline, or in a "
        "deepstream-app config a `[secondary-gie0]` (or `[primary-gie]`) group with `enable=1` and "
        "`config-file=` the file. Paths inside are relative to the config file, so keep the folder together. The "
        "secondary config classifies the objects of the GIE with gie-unique-id 1 (your detector); change "
        "`operate-on-gie-id` if yours differs. nvinfer builds the TensorRT engine on first run and saves it as "
        "`model-engine-file`.",
        "",
        "## What was checked",
        "",
        f"- Run here: the ONNX export, and its parity with the PyTorch pipeline on {parity.images} of the run's "
        f"images through onnxruntime (top-1 agreement {100 * parity.agreement:.2f} %, "
        f"max |Δprob| {parity.dprob:.2e}).",
        "- Checked statically only (DeepStream and TensorRT cannot run where this was exported): every config key, "
        "its type and allowed values, against Gst-nvinfer's documented property table; nvinfer itself, its "
        "scaling and the TensorRT engine build were not run.",
        "",
        "## Differences from clipedge's own preprocessing",
        "",
        f"- Threshold: classifier-threshold={threshold.value!r}: {threshold.note}.",
        "- Scaling: nvinfer resizes with its own GPU/VIC scaler, not PIL's antialiased "
        f"{run.backbone_spec.interpolation}; expect small probability differences.",
    ]
    if geometry.caveat:
        lines.append(f"- Geometry: {geometry.caveat}." + (
            f" On {letterbox['images']} of the run's images, letterboxing kept the top-1 class of the centre crop "
            f"in {100 * letterbox['top1_agreement']:.1f} % of cases (measured here with PIL)." if letterbox else ""))
    else:
        lines.append("- Geometry: " + ("letterboxed with centred black bars, as clipedge's 'longest' resize does."
                                       if geometry.maintain_aspect_ratio else
                                       "stretched to the square input, as clipedge's 'squash' resize does."))
    return "\n".join(lines) + "\n"
