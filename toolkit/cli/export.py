"""The ``clipedge export`` command; torch and onnx are imported only when it runs.

``clipedge --help`` and the torch-free commands import this module, so it may
import click and the light helpers, nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clipedge.calibration.int8_options import DEFAULT_COUNT, DEFAULT_MIN_AGREEMENT, METHODS
from clipedge.cli.triton import repository_options
from clipedge.core.tables import format_table
from clipedge.export.formats import FORMATS
from clipedge.export.options import OPSET, ExportOptions
from clipedge.runtime.contract import COLOUR_MATRICES, PIXEL_FORMATS
from clipedge.runtime.tensorrt.engine_build import describe_gate


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "format_", type=click.Choice(list(FORMATS)), default="onnx", show_default=True,
              help="; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values()) + ".")
@click.option("--fp16", is_flag=True, help="Half-precision encoder; input stays uint8, outputs stay float32.")
@click.option("--batch", help="N or MIN,OPT,MAX: the engine's batch profile (default 1,8,32), or the --fixed-batch size.")
@click.option("--fixed-batch", is_flag=True, help="Fix the ONNX input to the one batch size N given by --batch (default 1).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Artifact path (default RUN/export/model[.fp16|.int8].onnx or .engine); with --format deepstream "
                   "a folder (default RUN/export/deepstream), with --format triton the repository folder (default "
                   "RUN/export/triton).")
@click.option("--embeddings", is_flag=True, help="Add an 'embeddings' output (L2-normalised adapted features).")
@click.option("--adaptable", is_flag=True,
              help="Classes as data: the model ends at the embeddings; the class bank (.classes.npz) and the text "
                   "model (.text.onnx) are written beside it, so classes can be added on the device.")
@click.option("--opset", default=OPSET, show_default=True, type=int, help="ONNX opset (18 to 20: every TensorRT 10.x parses those).")
@click.option("--device", default="cpu", show_default=True,
              help="Where the PyTorch references run for the parity check: cpu, cuda, cuda:N or auto.")
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="TensorRT timing cache file reused across builds (default ~/.cache/clipedge/tensorrt.timing-cache).")
@click.option("--int8", is_flag=True,
              help="INT8 (QDQ) model from calibration images, gated against fp32 on every image calibration did not see "
                   "(measured layers return to float when it misses); with "
                   "--format engine, a TensorRT INT8 engine built from it.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="--int8: folder of calibration images (default: RUN's train and val images).")
@click.option("--calib-count", default=DEFAULT_COUNT, show_default=True, type=int,
              help="--int8: calibration images to use (a seeded sample).")
@click.option("--calib-method", default="auto", show_default=True, type=click.Choice(["auto", *METHODS]),
              help="--int8: activation range calibration; auto tries each and keeps the one that agrees best with fp32.")
@click.option("--min-agreement", default=DEFAULT_MIN_AGREEMENT, show_default=True, type=float,
              help="--int8: top-1 agreement with fp32 the INT8 model must reach on the images calibration did not see.")
@click.option("--process-mode", type=click.Choice(["primary", "secondary", "both"]),
              help="--format deepstream: which nvinfer configs to write (full frames, detector crops; default both).")
@click.option("--frame", help="WIDTHxHEIGHT, e.g. 1920x1080: the model takes the camera's raw frame and does colour "
                               "conversion, resize and centre crop in the graph, exactly as the runtime's PIL path.")
@click.option("--pixel-format", default="rgb", show_default=True, type=click.Choice(list(PIXEL_FORMATS)),
              help="--frame: rgb or bgr uint8 [N, H, W, 3], or nv12, one uint8 [N, H*3/2, W] plane.")
@click.option("--colour-matrix", type=click.Choice(list(COLOUR_MATRICES)),
              help="--pixel-format nv12: the limited-range YCbCr matrix (default: GStreamer's, bt709 above 576 "
                   "lines, bt601 up to 576).")
@repository_options
def export_command(run: Path, format_: str, **flags: Any) -> None:
    """Fuse RUN's encoder and head into one model (uint8 images in, probabilities out) and check it."""
    options = ExportOptions.of(format=format_, **flags)
    options.validate()  # before torch loads: a wrong combination fails in milliseconds, as the API refuses it
    from clipedge.export.exporter import export_model

    result = export_model(run, options=options)
    parity = result.parity
    click.echo(format_table(
        ["artifact", "size", "precision", "ONNX nodes", "top-1 agreement", "max |Δprob|", "seconds"],
        [[str(result.artifact), _megabytes(result.size_bytes), result.precision,
          f"{result.nodes_before} → {result.nodes_after}",
          f"{100 * min(parity['agreement_fused'], parity['agreement_pipeline']):.2f} %",
          f"{max(parity['max_dprob_fused'], parity['max_dprob_pipeline']):.2e}", round(result.seconds, 1)]],
    ))
    if result.quantization:
        q = result.quantization
        click.echo(format_table(
            ["calibration method", "top-1 agreement on selection images"],
            [[c["method"], f"{100 * c['agreement']:.2f} %"] for c in q["selection"]],
        ))
        if q["float_layers"]:
            click.echo(format_table(
                ["returned to float (most sensitive first)", "KL to fp32 with it alone in float", "gate agreement after"],
                [[f"{layer['layer']} ({layer['scope']})", f"{layer['divergence']:.2e}", f"{100 * agreement:.2f} %"]
                 for layer, agreement in zip(q["float_layers"], q["fallback_agreement"][1:])],
            ))
        gate, (low, high) = q["gate"], q["gate"]["interval"]
        click.echo(f"INT8: {q['calibration_method']} calibration on {q['calibration_images']} images "
                   f"({q['source']}), {q['int8_layers']} of {q['weighted_layers']} weighted layers in INT8; "
                   f"top-1 agreement with fp32 {100 * gate['agreement']:.2f} % (95 % CI {100 * low:.1f}–{100 * high:.1f} %) "
                   f"on {gate['images']} images calibration did not see ({q['untouched_gate_images']} of them unseen "
                   f"by the method and layer choice too), required ≥ {100 * gate['min_agreement']:g} %")
    else:
        click.echo(f"parity: {parity['images']} of the run's images, against the fused and the unfused PyTorch pipelines")
    if result.text_gate:
        text = result.text_gate
        click.echo(f"text model: {text['strings']} strings against open_clip's text encoder, max L2 error "
                   f"{text['max_l2_diff']:.2e} (allowed {text['max_l2_allowed']:.2e}), min cosine {text['min_cosine']:.7f}")
    if result.engine_gate:
        click.echo(f"engine gate: {describe_gate(result.engine_gate)} on the {result.engine_gate['images']} reference "
                   "frames embedded in the ONNX")
    for name, path in result.related.items():
        click.echo(f"{name}: {path}")
