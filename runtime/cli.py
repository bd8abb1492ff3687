"""``clipedge predict`` and ``clipedge bench``: torch-free click commands over the runtime.

Registered on the main ``clipedge`` group (toolkit/cli.py), which turns a
ClipedgeError into one line on stderr and exit status 2. Only ``bench
--compare-torch`` imports torch, and only when given.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from clipedge.errors import ClipedgeError
from clipedge.images import SkippedFile, UnreadableImage
from clipedge.tables import format_table

from .bench import REPORT_HEADERS, parse_batches, report_rows, run_bench
from .classifier import Classifier, Prediction
from .image_files import collect_images
from .preprocess import prepare_frame


def predict_files(classifier: Classifier, paths: list[Path], top_k: int,
                  progress: bool = False) -> tuple[list[tuple[Path, Prediction]], list[SkippedFile]]:
    """Classify image files batch by batch; files that fail to decode are returned as skipped, not raised."""
    results: list[tuple[Path, Prediction]] = []
    unreadable: list[SkippedFile] = []
    size = classifier.image_size
    with tqdm(total=len(paths), unit="image", disable=None if progress else True, leave=False) as bar:
        for start in range(0, len(paths), classifier.batch_size):
            frames, kept = [], []
            for path in paths[start : start + classifier.batch_size]:
                try:
                    frames.append(prepare_frame(path, size, classifier.interpolation, classifier.resize_mode,
                                                decoding=classifier.decoding))
                    kept.append(path)
                except UnreadableImage as error:
                    unreadable.append(error.skipped)
            if frames:
                results += zip(kept, classifier.predict(np.stack(frames), top_k=top_k))
            bar.update(len(paths[start : start + classifier.batch_size]))
    return results, unreadable


def _as_json(model: Path, classifier: Classifier, results: list[tuple[Path, Prediction]],
             skipped: list[SkippedFile]) -> str:
    return json.dumps({
        "model": str(model), "backend": classifier.backend_name, "skipped": len(skipped),
        "skipped_files": [s.to_dict() for s in skipped],
        "predictions": [{"path": str(path), **prediction.to_dict()} for path, prediction in results],
    }, indent=2)


def _as_csv(results: list[tuple[Path, Prediction]], top_k: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "score", *[f"{kind}_{rank}" for rank in range(2, top_k + 1) for kind in ("label", "score")]])
    for path, p in results:
        extra = [v for i in range(1, len(p.labels)) for v in (p.labels[i], f"{p.scores[i]:.6f}")]
        writer.writerow([str(path), p.label, f"{p.score:.6f}", *extra])
    return buffer.getvalue().rstrip("\n")


def _as_table(results: list[tuple[Path, Prediction]], top_k: int) -> str:
    headers = ["image", "label", "score", *(["top-k"] if top_k > 1 else [])]
    rows: list[list[Any]] = []
    for path, p in results:
        others = ", ".join(f"{label} {score:.3f}" for label, score in zip(p.labels, p.scores))
        rows.append([str(path), p.label, round(p.score, 4), *([others] if top_k > 1 else [])])
    return format_table(headers, rows)


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Classes listed per image.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime provider(s) in order of preference, e.g. CPUExecutionProvider (default: best available).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: model, backend, predictions, skipped files.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,label,score (+ label_k,score_k for --top-k > 1).")
@click.option("--no-exif-transpose", "exif_transpose", is_flag=True, flag_value=False, default=None,
              help="Use pixels as stored, ignoring the EXIF orientation (default: as the model's training did).")
@click.option("--max-image-pixels", type=click.IntRange(min=1),
              help="Skip files declaring more pixels than this (default: Pillow's limit, about 89 million).")
def predict_command(model: Path, images: tuple[Path, ...], top_k: int, batch_size: int, providers: tuple[str, ...],
                    as_json: bool, as_csv: bool, exif_transpose: bool | None, max_image_pixels: int | None) -> None:
    """Label IMAGES (files or folders, searched recursively) with MODEL (.onnx or .engine), without PyTorch.

    Files in folders that are not images are skipped and counted on stderr; so are files that fail to decode,
    each with its reason. Animations and multi-page files are classified by their first frame.
    """
    if as_json and as_csv:
        raise ClipedgeError("--json and --csv: choose one output format")
    paths, not_images = collect_images(images)
    skipped = [SkippedFile(path, "not-an-image", "no image file suffix") for path in not_images]
    total = len(paths) + len(skipped)
    classifier = Classifier(model, providers=list(providers) or None, batch_size=batch_size,
                            exif_transpose=exif_transpose, max_image_pixels=max_image_pixels)
    results, unreadable = predict_files(classifier, paths, top_k, progress=not (as_json or as_csv))
    skipped += unreadable
    if not results:
        raise ClipedgeError(f"IMAGES: no readable images among {total} file(s)")
    if as_json:
        click.echo(_as_json(model, classifier, results, skipped))
    elif as_csv:
        click.echo(_as_csv(results, top_k))
    else:
        click.echo(_as_table(results, top_k))
    if skipped:
        names = ", ".join(f"{s.path.name} ({s.reason})" for s in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        click.echo(f"skipped {len(skipped)} file(s) that are not readable images: {names}", err=True)


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
