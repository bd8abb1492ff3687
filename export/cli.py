"""The ``clipedge export`` command; heavy imports wait until it runs."""

from __future__ import annotations

from pathlib import Path

import click

from clipedge.tables import format_table

from .batch import DEFAULT_BATCH


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "format_", type=click.Choice(["onnx", "engine"]), default="onnx", show_default=True)
@click.option("--fp16", is_flag=True, help="Half-precision encoder; input stays uint8, outputs stay float32.")
@click.option("--batch", default=DEFAULT_BATCH, show_default=True, help="TensorRT profile: N or MIN,OPT,MAX.")
@click.option("--fixed-batch", type=int, help="Export with this fixed batch size instead of a dynamic one.")
@click.option("--out", type=click.Path(path_type=Path), help="Artifact path (default RUN/export/model[.fp16].onnx or model.engine).")
@click.option("--embeddings", is_flag=True, help="Add an 'embeddings' output (L2-normalised adapted features).")
@click.option("--opset", default=18, show_default=True, type=int)
@click.option("--timing-cache", type=click.Path(path_type=Path), help="TensorRT timing cache reused across builds.")
def export_command(run: Path, format_: str, fp16: bool, batch: str, fixed_batch: int | None, out: Path | None,
                   embeddings: bool, opset: int, timing_cache: Path | None) -> None:
    """Fuse RUN's encoder and head into one model (uint8 images in, probabilities out) and check it."""
    from .exporter import export_model

    result = export_model(run, out, format_, fp16, batch, fixed_batch, embeddings, opset, timing_cache=timing_cache)
    parity = result.parity
    click.echo(format_table(
        ["artifact", "size", "precision", "nodes (before → after)", "top-1 agreement", "max |Δprob|", "seconds"],
        [[str(result.artifact), _size(result.size_bytes), result.precision, f"{result.nodes_before} → {result.nodes_after}",
          f"{100 * min(parity['agreement_fused'], parity['agreement_pipeline']):.2f} %",
          f"{max(parity['max_dprob_fused'], parity['max_dprob_pipeline']):.2e}", round(result.seconds, 1)]],
    ))
    click.echo(f"parity checked on {parity['images']} images of the run against the fused and unfused PyTorch pipelines")
    for key, value in result.extra.items():
        click.echo(f"{key}: {value}")
