"""``clipedge check`` and ``clipedge engine``: the TensorRT path on the device, torch-free.

``check`` needs only the ``onnx`` package beside the runtime; ``engine`` needs TensorRT and cuda-python. Both
import them when run, so ``clipedge --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from clipedge.core.errors import ClipedgeError
from clipedge.core.tables import format_table


@click.command("check")
@click.argument("model", type=click.Path(path_type=Path))
def check_command(model: Path) -> None:
    """Check MODEL.onnx statically against TensorRT 10.x's ONNX rules (operators, types, UINT8/INT8, shapes)."""
    from clipedge.runtime.tensorrt.check import check_tensorrt_compatible

    violations = check_tensorrt_compatible(model)
    if violations:
        click.echo(format_table(["node", "op", "rule", "detail"], [[v.node, v.op, v.rule, v.detail] for v in violations]))
        raise ClipedgeError(f"model {model}: {len(violations)} TensorRT rule violation(s), first: {violations[0]}")
    click.echo(f"{model}: TensorRT-compatible (onnx-tensorrt's operator table for TensorRT 10.x, UINT8 only as I/O, "
               "INT8 only in Q/DQ, static shapes but the batch)")


@click.command("engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Engine path (default: MODEL with .engine).")
@click.option("--batch", help="MIN,OPT,MAX optimisation profile (default: the range MODEL was exported for).")
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="TensorRT timing cache reused across builds (default ~/.cache/clipedge/tensorrt.timing-cache).")
@click.option("--version-compatible", is_flag=True, help="Let later TensorRT versions run the engine (lean runtime inside).")
@click.option("--hardware-compatible", is_flag=True, help="Let every Ampere-or-newer GPU run the engine.")
def engine_command(model: Path, out: Path | None, batch: str | None, timing_cache: Path | None,
                   version_compatible: bool, hardware_compatible: bool) -> None:
    """Build a strongly typed TensorRT engine from a clipedge MODEL.onnx on this GPU, gated on its reference set."""
    from clipedge.runtime.tensorrt.engine_build import build_engine, describe_gate

    build = build_engine(model, out, batch, timing_cache, version_compatible, hardware_compatible)
    facts = build.facts
    click.echo(format_table(
        ["engine", "size", "precision", "batch profile", "TensorRT", "GPU"],
        [[str(build.engine), f"{facts['engine_bytes'] / 1e6:.1f} MB", facts["precision"],
          facts["build_flags"]["profile"], facts["tensorrt_version"],
          f"{facts['gpu_name']} ({facts['compute_capability']})"]]))
    click.echo(f"gate: {describe_gate(build.gate)} on the {build.gate['images']} reference frames")
    click.echo(f"sidecar: {build.sidecar}")
