"""``clipedge bench``: latency and throughput of an exported or served model, torch-free but for --compare-torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from clipedge.core.errors import ClipedgeError
from clipedge.core.tables import format_table
from clipedge.runtime.contract.names import DEFAULT_BATCH_PROFILE
from clipedge.runtime.preprocessing.transform import RESIZE_QUALITIES

from .options import json_option, providers_option


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
@click.option("--batch", "batches", default=DEFAULT_BATCH_PROFILE, show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", default=200, show_default=True, type=click.IntRange(min=1),
              help="Timed calls per batch size and pipeline (enough that p99 is not just the slowest call).")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed calls first.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="With --compare-torch: alternate runtime and torch in this many blocks, so passing load hits both.")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(min=1),
              help="CPU threads, for onnxruntime and torch alike.")
@providers_option()
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
@json_option("One JSON object; every measurement has p50_ms, p99_ms, images_per_s.")
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
    from clipedge.runtime.backends import is_server_url
    from clipedge.runtime.bench.local import REPORT_HEADERS, parse_batches, report_rows, run_bench
    from clipedge.runtime.preprocessing.image_files import collect_images

    if is_server_url(model) or concurrency:
        return _bench_server(model, parse_batches(batches), concurrency or "1", iters, warmup, as_json)
    if image_inputs and not baseline:
        raise ClipedgeError("--images: measures agreement with --baseline MODEL; give one")
    images = collect_images(image_inputs, option="--images")[0] if image_inputs else None
    torch_pipeline = None
    if torch_run:
        try:
            from clipedge.torch_pipeline import eager_pipeline
        except ImportError as error:  # a torch-free runtime install
            raise ClipedgeError(f"--compare-torch needs PyTorch and open_clip, which this install lacks ({error})") from None
        torch_pipeline = eager_pipeline(torch_run, threads)
    report = run_bench(model, parse_batches(batches), iters, warmup, threads, list(providers) or None, torch_run,
                       torch_pipeline, cuda_graph, rounds, baseline, images, frame, jpeg, duration, resize_quality)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    size = report["image_size"]
    click.echo(f"{model} · {threads} threads · uint8 frames {size}x{size} in, probabilities out")
    click.echo(format_table(REPORT_HEADERS, report_rows(report)))
    for line in agreement_lines(report) + frame_lines(report):
        click.echo(line)


def _bench_server(url: str, batches: list[int], concurrency: str, iterations: int, warmup: int, as_json: bool) -> None:
    """``clipedge bench URL [--concurrency 1,8]``: the report as a table or JSON."""
    from clipedge.runtime.backends import is_server_url
    from clipedge.runtime.bench.server import SERVER_HEADERS, parse_concurrency, run_server_bench, server_rows

    if not is_server_url(url):
        raise ClipedgeError(f"--concurrency: measures a served model; MODEL {url} is not a grpc:// or http:// URL")
    report = run_server_bench(url, batches, parse_concurrency(concurrency), iterations, warmup)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{url} · {report['backend']} · uint8 frames {report['image_size']}x{report['image_size']} in, "
               "probabilities out; latency as each client sees it")
    click.echo(format_table(SERVER_HEADERS, server_rows(report)))
