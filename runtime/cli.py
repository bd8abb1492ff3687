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
import sys
from pathlib import Path
from typing import Any

import click

from clipedge.errors import ClipedgeError
from clipedge.images import SkippedFile, UnreadableImage
from clipedge.tables import format_table

from .backends import is_server_url
from .bench import REPORT_HEADERS, parse_batches, report_rows, run_bench
from .boxes import Region, boxes_for, check_boxes, read_boxes_file
from .classifier import Classifier, Prediction
from .image_files import collect_images
from .predict_stream import check_inputs, not_an_image, stream_predictions
from .preprocess import RESIZE_QUALITIES, prepare_whole_frame
from .schemas import SCHEMA_VERSIONS

#: the shell's status for a run stopped by SIGINT (128 + 2); predict's output is complete up to that point
INTERRUPTED_EXIT = 130


def predict_regions(classifier: Classifier, paths: list[Path], boxes: dict[str, list] | list, top_k: int,
                    boxes_file: Path) -> tuple[list[tuple[Region, Prediction]], list[SkippedFile]]:
    """``--boxes``: each image's boxes classified in one call per image; images without boxes are skipped, a
    bad box is an error naming the file and the box."""
    results: list[tuple[Region, Prediction]] = []
    unreadable: list[SkippedFile] = []
    boxed = [(path, boxes_for(boxes, path)) for path in paths]
    if all(image_boxes is None for _, image_boxes in boxed):
        raise ClipedgeError(f"--boxes {boxes_file}: names none of the {len(paths)} image(s) given (keys are image paths "
                            "as given on the command line, or file names)")
    for path, image_boxes in boxed:
        if image_boxes is None:
            continue
        try:
            frame = prepare_whole_frame(path, classifier.decoding)
        except UnreadableImage as error:
            unreadable.append(error.skipped)
            continue
        checked = check_boxes(image_boxes, frame.shape[1], frame.shape[0], f"--boxes {boxes_file} for {path}")
        results += [(Region(path, box), prediction)
                    for box, prediction in zip(checked, classifier.predict(frame, top_k=top_k, boxes=checked))]
    return results, unreadable


def _as_json(model: str | Path, classifier: Classifier, results: list[tuple[Path | Region, Prediction]],
             skipped: list[SkippedFile]) -> str:
    def source(path: Path | Region) -> dict[str, Any]:
        return {"path": str(path.path), "box": list(path.box)} if isinstance(path, Region) else {"path": str(path)}

    return json.dumps({
        "schema_version": SCHEMA_VERSIONS["predict"], "model": str(model), "backend": classifier.backend_name,
        "skipped": len(skipped),
        "skipped_files": [s.to_dict() for s in skipped],
        "predictions": [{**source(path), **prediction.to_dict()} for path, prediction in results],
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
@click.argument("model")
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
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path),
              help="JSON boxes [[x0, y0, x1, y1], ...] to classify instead of whole images: one list for every image, "
                   "or an object mapping image paths (or file names) to their boxes.")
@click.option("--no-exif-transpose", "exif_transpose", is_flag=True, flag_value=False, default=None,
              help="Use pixels as stored, ignoring the EXIF orientation (default: as the model's training did).")
@click.option("--max-image-pixels", type=click.IntRange(min=1),
              help="Skip files declaring more pixels than this (default: the model's training limit, else Pillow's, "
                   "about 89 million).")
def predict_command(model: str, images: tuple[Path, ...], top_k: int, batch_size: int, providers: tuple[str, ...],
                    labels: Path | None, as_json: bool, as_csv: bool, boxes_file: Path | None,
                    exif_transpose: bool | None, max_image_pixels: int | None) -> None:
    """Label IMAGES (files or folders, searched recursively) with MODEL (.onnx or .engine, or a served model:
    grpc://HOST:PORT/NAME or http://HOST:PORT/NAME), without PyTorch.

    Results are written batch by batch as they are computed, so folders of any size run in flat memory and
    an interrupted run (Ctrl-C, SIGTERM: exit status 130) keeps, and properly closes, what it did. Files in
    folders that are not images are skipped and counted on stderr; so are files that fail to decode, each with
    its reason. Animations and multi-page files are classified by their first frame.
    """
    if as_json and as_csv:
        raise ClipedgeError("--json and --csv: choose one output format")
    classifier_options = {"providers": list(providers) or None, "batch_size": batch_size, "labels": labels,
                          "exif_transpose": exif_transpose, "max_image_pixels": max_image_pixels}
    if boxes_file:
        _predict_boxes(model, images, top_k, read_boxes_file(boxes_file), boxes_file, as_json, as_csv,
                       Classifier(model, **classifier_options))
        return
    inputs = check_inputs(images)
    classifier = Classifier(model, **classifier_options)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    outcome = stream_predictions(classifier, inputs, sys.stdout, model, fmt, top_k)
    report_skipped(outcome.skipped)
    if outcome.interrupted:
        click.echo(f"interrupted: the output holds the {outcome.classified} image(s) classified before", err=True)
        sys.exit(INTERRUPTED_EXIT)
    if not outcome.classified:
        raise ClipedgeError(f"IMAGES: no readable images among {len(outcome.skipped)} file(s)")


def _predict_boxes(model: Path, images: tuple[Path, ...], top_k: int, boxes: dict[str, list] | list, boxes_file: Path,
                   as_json: bool, as_csv: bool, classifier: Classifier) -> None:
    """``--boxes``: regions of each image, one model call per image (not streamed: boxes files list few images)."""
    paths, not_images = collect_images(images)
    skipped = [not_an_image(path) for path in not_images]
    results, unreadable = predict_regions(classifier, paths, boxes, top_k, boxes_file)
    skipped += unreadable
    if not results:
        raise ClipedgeError(f"IMAGES: no readable images among {len(paths) + len(skipped)} file(s)")
    if as_json:
        click.echo(_as_json(model, classifier, results, skipped))
    elif as_csv:
        click.echo(_as_csv(results, top_k))
    else:
        click.echo(_as_table(results, top_k))
    report_skipped(skipped)


def report_skipped(skipped: list[SkippedFile]) -> None:
    """One line on stderr: how many files were skipped, the first few with their one-word reasons."""
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


def frame_lines(report: dict[str, Any]) -> list[str]:
    """What the camera frame costs beyond the model, and how the CPU resize that paid for it was validated."""
    if not report.get("frame_size"):
        return []
    overheads = ", ".join(f"batch {e['batch']}: {e['frame_overhead_p50']:.2f}×" for e in report["results"])
    lines = [f"frame overhead (frame p50 / model-only p50): {overheads}"]
    parity = report.get("fast_resize_parity")
    if report.get("resize_quality") == "fast" and parity:
        lines.append(f"fast resize at export: top-1 agreement {100 * min(parity['agreement_fused'], parity['agreement_pipeline']):.2f} %, "
                     f"max |Δprob| {max(parity['max_dprob_fused'], parity['max_dprob_pipeline']):.2e} on {parity['images']} images")
    return lines


@click.command("bench")
@click.argument("model")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", default=200, show_default=True, type=click.IntRange(min=1),
              help="Timed calls per batch size and pipeline (enough that p99 is not just the slowest call).")
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
@click.option("--frame", help="WIDTHxHEIGHT: also time whole camera frames of this size through the Classifier "
                               "(colour order, resize, crop, model) beside the model-only timing.")
@click.option("--jpeg", is_flag=False, flag_value="", default=None, metavar="[FILE]",
              help="With --frame: frames arrive as JPEG files and decoding is timed too (a generated frame, or FILE).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Seconds per batch size, alternating pipelines, instead of a fixed --iters.")
@click.option("--resize-quality", default="fast", show_default=True, type=click.Choice(list(RESIZE_QUALITIES)),
              help="The Classifier's CPU resize for --frame: fast, or exact (open_clip's eval transform to the grey level).")
@click.option("--concurrency", help="A served model (grpc:// or http:// URL): concurrent clients, comma-separated, e.g. 1,8.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object; every measurement has p50_ms, p99_ms, images_per_s.")
def bench_command(model: str, batches: str, iters: int, warmup: int, rounds: int, threads: int, providers: tuple[str, ...],
                  cuda_graph: bool, torch_run: Path | None, baseline: Path | None, image_inputs: tuple[Path, ...],
                  frame: str | None, jpeg: str | None, duration: float | None, resize_quality: str,
                  concurrency: str | None, as_json: bool) -> None:
    """Latency (p50/p90/p99) and images/s of MODEL on uint8 frames in host memory, probabilities out.

    With --baseline OTHER_MODEL, a second export is timed alongside (and, with --images, their top-1
    agreement measured); with --compare-torch RUN, the same frames also go through RUN's PyTorch eager
    pipeline (normalise, encode_image, head, softmax) in this process, and the speed-up is reported.
    MODEL may be a served model (grpc://HOST:PORT/NAME, http://HOST:PORT/NAME): see --concurrency.
    """
    if is_server_url(model) or concurrency:
        from .server_bench import bench_server

        return bench_server(model, parse_batches(batches), concurrency or "1", iters, warmup, as_json)
    if image_inputs and not baseline:
        raise ClipedgeError("--images: measures agreement with --baseline MODEL; give one")
    images = collect_images(image_inputs, option="--images")[0] if image_inputs else None
    report = run_bench(model, parse_batches(batches), iters, warmup, threads, list(providers) or None, torch_run,
                       cuda_graph, rounds, baseline, images, frame, jpeg, duration, resize_quality)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    size = report["image_size"]
    click.echo(f"{model} · {threads} threads · uint8 frames {size}x{size} in, probabilities out")
    click.echo(format_table(REPORT_HEADERS, report_rows(report)))
    for line in agreement_lines(report) + frame_lines(report):
        click.echo(line)
