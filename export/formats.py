"""What ``clipedge export`` can write, and which options each format accepts (after ultralytics' ``export_formats``).

One table instead of scattered ``if format == ...``: an option that a format would ignore is an error that
names the option and the formats that take it, so ``--batch 4`` on a dynamic ONNX or ``--calib`` without
``--int8`` fails in one line instead of being silently dropped. Torch-free, so the CLI can check arguments
before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipedge.core.errors import ClipedgeError

if TYPE_CHECKING:
    from .options import ExportOptions

#: options every format takes
COMMON_OPTIONS = frozenset({"out", "device", "opset", "embeddings", "fp16", "int8"})
#: options that only mean something with --int8
INT8_OPTIONS = frozenset({"calib", "calib_count", "calib_method", "min_agreement", "calib_seed"})
#: options that only mean something with --frame (the camera-frame input)
FRAME_OPTIONS = frozenset({"pixel_format", "colour_matrix"})
#: options an --adaptable export cannot honour (clipedge.export.adaptable)
ADAPTABLE_REFUSED = frozenset({"int8", "embeddings", "frame", "batch", "fixed_batch"})
#: the repository options of --format triton (clipedge.cli.triton.repository_options)
TRITON_OPTIONS = frozenset({"name", "max_batch", "max_queue_delay_us", "instances", "instance_kind", "ort_tensorrt",
                            "overwrite"})


@dataclass(frozen=True)
class ExportFormat:
    name: str
    summary: str
    #: options beyond COMMON_OPTIONS (and, with --int8, INT8_OPTIONS) that this format accepts
    options: frozenset[str]
    #: "module:function" (under clipedge.export) that writes this format; imported when an export runs, so this
    #: table stays torch-free for the CLI
    builder: str
    #: common options this format cannot honour, each with the reason
    refused: tuple[tuple[str, str], ...] = ()

    def build(self, run_dir: str | Path, options: ExportOptions) -> Any:
        """Run this format's builder on a validated ``options``; returns its :class:`ExportResult`."""
        module, function = self.builder.split(":")
        return getattr(import_module(f"clipedge.export.{module}"), function)(run_dir, options)


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", "one ONNX model (fp32, --fp16 or --int8)",
                 frozenset({"batch", "fixed_batch", "frame", "adaptable", *FRAME_OPTIONS}), "exporter:export_fused"),
    ExportFormat("engine", "a TensorRT engine built on this machine's GPU",
                 frozenset({"batch", "fixed_batch", "timing_cache"}), "exporter:export_fused"),
    ExportFormat("deepstream", "a folder for DeepStream's Gst-nvinfer: float NCHW ONNX, labels, config_infer_*.txt",
                 frozenset({"batch", "process_mode", "overwrite"}), "deepstream:export_deepstream",
                 (("int8", "nvinfer turns INT8 on only with an int8-calib-file, else falls back to FP16; export fp32 or --fp16"),
                  ("embeddings", "nvinfer's classifier reads one softmax output; the variant has probs only"))),
    ExportFormat("triton", "a Triton model repository around the ONNX (--out REPO)",
                 frozenset({"batch", "fixed_batch", *TRITON_OPTIONS}), "triton_export:export_triton"),
)}


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_export_options(format: str, given: set[str]) -> ExportFormat:
    """Refuse a format we cannot write and any explicitly given option that ``format`` would ignore."""
    if format not in FORMATS:
        raise ClipedgeError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    spec = FORMATS[format]
    if "fp16" in given and "int8" in given:
        raise ClipedgeError("--int8 and --fp16: choose one (an INT8 model keeps its float layers in fp32)")
    for name, reason in spec.refused:
        if name in given:
            raise ClipedgeError(f"{option_flag(name)}: not available with --format {format} ({reason})")
    for name in sorted(given & INT8_OPTIONS):
        if "int8" not in given:
            raise ClipedgeError(f"{option_flag(name)} configures INT8 calibration: add --int8 or drop it")
    for name in sorted(given & FRAME_OPTIONS):
        if "frame" not in given:
            raise ClipedgeError(f"{option_flag(name)} describes the camera frame: add --frame WIDTHxHEIGHT or drop it")
    for name in sorted(given & ADAPTABLE_REFUSED):
        if "adaptable" in given:
            raise ClipedgeError(f"--adaptable and {option_flag(name)}: an adaptable export is a dynamic-batch fp32 or "
                                "--fp16 model at model size whose only output is the embeddings")
    if "frame" in given and "int8" in given:
        raise ClipedgeError("--frame and --int8: INT8 calibration feeds model-size images; export --frame in fp32 or --fp16")
    if format in ("onnx", "triton") and "batch" in given and "fixed_batch" not in given:
        raise ClipedgeError("--batch: a dynamic ONNX accepts any batch size; --batch needs --fixed-batch "
                            "or --format engine (its optimisation profile)")
    for name in sorted(given - COMMON_OPTIONS - INT8_OPTIONS - spec.options):
        takers = [f.name for f in FORMATS.values() if name in f.options]
        where = f"only with --format {' or '.join(takers)}" if takers else "with no format"
        raise ClipedgeError(f"{option_flag(name)}: not used by --format {format} (it applies {where})")
    return spec
