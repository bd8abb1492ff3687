"""``clipedge predict`` and ``clipedge bench``: torch-free click commands over the runtime.

Registered on the main ``clipedge`` group (toolkit/cli.py), which turns a
ClipedgeError into one line on stderr and exit status 2. Only ``bench
--compare-torch`` imports torch, and only when given.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from clipedge.errors import ClipedgeError
from clipedge.tables import format_table

from .bench import REPORT_HEADERS, parse_batches, report_rows, run_bench
from .classifier import Classifier
from .image_files import collect_images
from .predict_stream import check_inputs, stream_predictions

#: the shell's status for a run stopped by SIGINT (128 + 2); predict's output is complete up to that point
INTERRUPTED_EXIT = 130


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Classes listed per image.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime provider(s) in order of preference, e.g. CPUExecutionProvider (default: best available).")
@click.option("--labels", "labels", type=click.Path(path_type=Path),
              help="Class names, one per line, for an ONNX model that is not a clipedge export (uint8 NHWC input).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (model, backend, predictions, skipped files), streamed one prediction per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,label,score (+ label_k,score_k for --top-k > 1), streamed.")
def predict_command(model: Path, images: tuple[Path, ...], top_k: int, batch_size: int, providers: tuple[str, ...],
                    labels: Path | None, as_json: bool, as_csv: bool) -> None:
    """Label IMAGES (files or folders, searched recursively) with MODEL (.onnx or .engine), without PyTorch.

    Results are written batch by batch as they are computed, so folders of any size run in flat memory and
    an interrupted run (Ctrl-C, SIGTERM: exit status 130) keeps, and properly closes, what it did. Files in
    folders that are not images are skipped and counted on stderr; so are unreadable images.
    """
    if as_json and as_csv:
        raise ClipedgeError("--json and --csv: choose one output format")
    inputs = check_inputs(images)
    classifier = Classifier(model, providers=list(providers) or None, batch_size=batch_size, labels=labels)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    outcome = stream_predictions(classifier, inputs, sys.stdout, model, fmt, top_k)
    if outcome.skipped:
        names = ", ".join(p.name for p in outcome.skipped[:5]) + (", ..." if len(outcome.skipped) > 5 else "")
        click.echo(f"skipped {len(outcome.skipped)} file(s) that are not readable images: {names}", err=True)
    if outcome.interrupted:
        click.echo(f"interrupted: the output holds the {outcome.classified} image(s) classified before", err=True)
        sys.exit(INTERRUPTED_EXIT)
    if not outcome.classified:
        raise ClipedgeError(f"IMAGES: no readable images among {len(outcome.skipped)} file(s)")


def agreement_lines(report: dict[str, Any]) -> list[str]:
    """How far the model's answers can be trusted against its baseline: measured here, and at export."""
    lines = []
    if report["agreement"]:
        a = report["agreement"]
        lines.append(f"top-1 agreement with the baseline: {100 * a['top1']:.2f} % on {a['images']} images (--images)")
    parity = report["recorded_parity"]
    if parity and report["precision"] == "int8":
        agreement = min(parity["agreement_fused"], parity["agreement_pipeline"])
        lines.append(f"recorded at export: top-1 agreement with fp32 {100 * agreement:.2f} % on {parity['images']} "
                     "held-out test images")
    return lines


@click.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", default=50, show_default=True, type=click.IntRange(min=1), help="Timed calls per batch size.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed calls first.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="With --compare-torch: alternate runtime and torch in this many blocks, so passing load hits both.")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(min=1),
              help="CPU threads, for onnxruntime and torch alike.")
@click.option("--provider", "providers", multiple=True, help="onnxruntime provider(s), as for predict.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT engines: replay each batch as a CUDA graph.")
@click.option("--compare-torch", "torch_run", type=click.Path(path_type=Path),
              help="RUN directory: also time its PyTorch eager pipeline (needs torch) and report the speed-up.")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Another exported model (e.g. the fp32 one beside an INT8 one), timed alongside; p50 ratios reported.")
@click.option("--images", "image_inputs", multiple=True, type=click.Path(path_type=Path),
              help="With --baseline: image files or folders on which both models' top-1 agreement is measured.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object; every measurement has p50_ms, p99_ms, images_per_s.")
def bench_command(model: Path, batches: str, iters: int, warmup: int, rounds: int, threads: int, providers: tuple[str, ...],
                  cuda_graph: bool, torch_run: Path | None, baseline: Path | None, image_inputs: tuple[Path, ...],
                  as_json: bool) -> None:
    """Latency (p50/p90/p99) and images/s of MODEL on uint8 frames in host memory, probabilities out.

    With --baseline OTHER_MODEL, a second export is timed alongside (and, with --images, their top-1
    agreement measured); with --compare-torch RUN, the same frames also go through RUN's PyTorch eager
    pipeline (normalise, encode_image, head, softmax) in this process, and the speed-up is reported.
    """
    if image_inputs and not baseline:
        raise ClipedgeError("--images: measures agreement with --baseline MODEL; give one")
    images = collect_images(image_inputs, option="--images")[0] if image_inputs else None
    report = run_bench(model, parse_batches(batches), iters, warmup, threads, list(providers) or None, torch_run,
                       cuda_graph, rounds, baseline, images)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    size = report["image_size"]
    click.echo(f"{model} · {threads} threads · uint8 frames {size}x{size} in, probabilities out")
    click.echo(format_table(REPORT_HEADERS, report_rows(report)))
    for line in agreement_lines(report):
        click.echo(line)
