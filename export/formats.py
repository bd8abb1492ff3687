"""What ``clipedge export`` can write, and which options each format accepts (after ultralytics' ``export_formats``).

One table instead of scattered ``if format == ...``: an option that a format would ignore is an error that
names the option and the formats that take it, so ``--batch 4`` on a dynamic ONNX or ``--calib`` without
``--int8`` fails in one line instead of being silently dropped. Torch-free, so the CLI can check arguments
before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipedge.errors import ClipedgeError

#: options every format takes
COMMON_OPTIONS = frozenset({"out", "device", "opset", "embeddings", "fp16", "int8"})
#: options that only mean something with --int8
INT8_OPTIONS = frozenset({"calib", "calib_count", "calib_method", "min_agreement"})
#: the repository options of --format triton (clipedge.runtime.serve_cli.repository_options)
TRITON_OPTIONS = frozenset({"name", "max_batch", "max_queue_delay_us", "instances", "instance_kind", "ort_tensorrt",
                            "overwrite"})


@dataclass(frozen=True)
class ExportFormat:
    name: str
    summary: str
    #: options beyond COMMON_OPTIONS (and, with --int8, INT8_OPTIONS) that this format accepts
    options: frozenset[str]


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", "one ONNX model (fp32, --fp16 or --int8)", frozenset({"batch", "fixed_batch"})),
    ExportFormat("engine", "a TensorRT engine built on this machine's GPU",
                 frozenset({"batch", "fixed_batch", "timing_cache"})),
    ExportFormat("triton", "a Triton model repository around the ONNX (--out REPO)",
                 frozenset({"batch", "fixed_batch", *TRITON_OPTIONS})),
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
    for name in sorted(given & INT8_OPTIONS):
        if "int8" not in given:
            raise ClipedgeError(f"{option_flag(name)} configures INT8 calibration: add --int8 or drop it")
    if format in ("onnx", "triton") and "batch" in given and "fixed_batch" not in given:
        raise ClipedgeError("--batch: a dynamic ONNX accepts any batch size; --batch needs --fixed-batch "
                            "or --format engine (its optimisation profile)")
    for name in sorted(given - COMMON_OPTIONS - INT8_OPTIONS - spec.options):
        takers = [f.name for f in FORMATS.values() if name in f.options]
        where = f"only with --format {' or '.join(takers)}" if takers else "with no format"
        raise ClipedgeError(f"{option_flag(name)}: not used by --format {format} (it applies {where})")
    return spec
