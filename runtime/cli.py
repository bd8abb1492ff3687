"""``clipedge predict`` and ``clipedge bench``: torch-free commands over the runtime.

Only ``bench --compare-torch`` imports torch, and only when asked.
"""

from __future__ import annotations

import csv
import io
import json
import os
from importlib import import_module
from pathlib import Path

import click

from clipedge.tables import format_table

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def collect_images(inputs: tuple[Path, ...]) -> tuple[list[Path], int]:
    """Files given directly, plus image files found in folders; other files in folders are counted, not read."""
    from clipedge.errors import ClipedgeError

    images, skipped = [], 0
    for item in inputs:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(path)
                else:
                    skipped += 1
        elif item.is_file():
            images.append(item)
        else:
            raise ClipedgeError(f"IMAGES {item}: no such file or folder")
    return images, skipped


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=1, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--provider", "providers", multiple=True, help="onnxruntime provider(s), e.g. CPUExecutionProvider.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run: {'predictions': [...], 'skipped': N}.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,label,score (+ rank columns for --top-k > 1).")
def predict_command(model: Path, images: tuple[Path, ...], top_k: int, batch_size: int, providers: tuple[str, ...],
                    as_json: bool, as_csv: bool) -> None:
    """Label IMAGES (files or folders) with MODEL (.onnx or .engine), without PyTorch."""
    from clipedge.errors import ClipedgeError

    from .classifier import Classifier

    paths, skipped = collect_images(images)
    if not paths:
        raise ClipedgeError("IMAGES: no image files found")
    classifier = Classifier(model, providers=list(providers) or None, batch_size=batch_size)
    rows, unreadable = [], 0
    for path in paths:
        try:
            prediction = classifier(path, top_k=top_k)
        except ClipedgeError:
            unreadable += 1
            continue
        rows.append((path, prediction))
    skipped += unreadable
    if as_json:
        click.echo(json.dumps({"model": str(model), "backend": classifier.backend_name, "skipped": skipped, "predictions": [
            {"path": str(p), "label": r.label, "labels": list(r.labels), "indices": list(r.indices), "scores": list(r.scores)}
            for p, r in rows]}, indent=2))
    elif as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label", "score"] + [f"{kind}_{i + 2}" for i in range(top_k - 1) for kind in ("label", "score")])
        for path, r in rows:
            extra = [v for i in range(1, len(r.labels)) for v in (r.labels[i], f"{r.scores[i]:.6f}")]
            writer.writerow([str(path), r.label, f"{r.score:.6f}", *extra])
        click.echo(buffer.getvalue().rstrip("\n"))
    else:
        click.echo(format_table(["image", "label", "score", *(["top-k"] if top_k > 1 else [])],
                                [[str(p), r.label, round(r.score, 4), *([", ".join(r.labels)] if top_k > 1 else [])] for p, r in rows]))
    if skipped:
        click.echo(f"skipped {skipped} file(s) that are not readable images", err=True)


@click.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", default=50, show_default=True, type=int)
@click.option("--warmup", default=10, show_default=True, type=int)
@click.option("--threads", default=os.cpu_count(), show_default=True, type=int, help="CPU threads for onnxruntime and torch.")
@click.option("--provider", "providers", multiple=True)
@click.option("--compare-torch", "torch_run", type=click.Path(path_type=Path), help="RUN: also time the PyTorch eager pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
def bench_command(model: Path, batches: str, iters: int, warmup: int, threads: int, providers: tuple[str, ...],
                  torch_run: Path | None, as_json: bool) -> None:
    """Latency (p50/p90/p99) and throughput of MODEL on host uint8 frames, optionally against PyTorch eager."""
    from clipedge.errors import ClipedgeError

    from .bench import measure, random_frames
    from .classifier import Classifier

    try:
        sizes = [int(b) for b in batches.split(",")]
    except ValueError:
        raise ClipedgeError(f"--batch {batches}: expected comma-separated whole numbers, e.g. 1,8,32") from None
    if not sizes or min(sizes) < 1 or iters < 1 or warmup < 0:
        raise ClipedgeError("--batch, --iters: expected positive numbers")
    classifier = Classifier(model, providers=list(providers) or None, batch_size=max(sizes), threads=threads)
    reference = import_module("clipedge.torch_pipeline").eager_pipeline(torch_run, threads) if torch_run else None
    report = {"model": str(model), "backend": classifier.backend_name, "threads": threads, "image_size": classifier.image_size,
              "results": []}
    for batch in sizes:
        frames = random_frames(batch, classifier.image_size)
        entry = {"batch": batch, "runtime": measure(lambda f: classifier.infer(f)["probs"], frames, iters, warmup).to_dict()}
        if reference:
            entry["torch"] = measure(reference, frames, iters, warmup).to_dict()
            entry["speedup_p50"] = entry["torch"]["p50_ms"] / entry["runtime"]["p50_ms"]
            entry["speedup_throughput"] = entry["runtime"]["images_per_s"] / entry["torch"]["images_per_s"]
        report["results"].append(entry)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    rows = []
    for entry in report["results"]:
        for backend in ("runtime", "torch"):
            if backend in entry:
                m = entry[backend]
                name = report["backend"] if backend == "runtime" else "pytorch eager"
                rows.append([name, entry["batch"], round(m["p50_ms"], 2), round(m["p90_ms"], 2), round(m["p99_ms"], 2),
                             round(m["images_per_s"], 1), round(entry["speedup_p50"], 2) if backend == "runtime" and reference else None])
    click.echo(f"{model} · {threads} threads · uint8 frames {classifier.image_size}x{classifier.image_size} in, probabilities out")
    click.echo(format_table(["backend", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "speed-up p50"], rows))

