"""Latency and throughput of an exported model, beside another export of it or the PyTorch pipeline it replaces.

What is timed is what a camera loop pays: uint8 frames at model size in host
memory in, probabilities in host memory out. Latency percentiles come from
``iterations`` timed calls after ``warmup`` untimed ones; throughput is the
batch size over the median latency. All pipelines see the same frames in the
same process with the same thread count, timed in alternating rounds.

``--baseline`` times a second exported model (say the fp32 model beside its
INT8 one) the same way; with ``--images`` both also classify real images and
their top-1 agreement is reported, next to the agreement the model's export
gate recorded in its metadata.

The report (``clipedge bench --json``)::

    {"model": str, "backend": str, "precision": str, "threads": int, "image_size": int, "iterations": int,
     "warmup": int, "rounds": int, "torch_run": str | null,
     "baseline": {"model": str, "backend": str, "precision": str} | null,
     "recorded_parity": {...} | null,        # the model's export gate, from its metadata
     "agreement": {"images": int, "top1": float} | null,   # model vs baseline on --images
     "results": [{"batch": int,
                  "runtime":  {"batch", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "iterations"},
                  "baseline": {... the same keys; only with --baseline},
                  "torch":    {... the same keys; only with --compare-torch},
                  "latency_ratio_p50": float,    # runtime p50 / baseline p50; only with --baseline
                  "speedup_p50": float,          # torch p50 / runtime p50; only with --compare-torch
                  "speedup_throughput": float,   # runtime images/s / torch images/s; only with --compare-torch
                  "frame": {... the same keys; only with --frame: camera frames through Classifier},
                  "frame_overhead_p50": float}], # frame p50 / runtime (model-only) p50; only with --frame
     "frame_size": "WxH" | null, "jpeg": "generated" | FILE | null, "duration_s": float | null,
     "resize_quality": "fast" | "exact" | null,      # the Classifier's CPU resize (null: a --frame model)
     "fast_resize_parity": {...} | null,             # the fast resize's figures, recorded at export
     "model_frame": {"width", "height", "pixel_format", ...} | null}   # a --frame model's input
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.bench.frames import frame_pipeline
from clipedge.runtime.contract import DEFAULT_BATCH_PROFILE, parse_frame
from clipedge.runtime.preprocessing.transform import prepare_files
from clipedge.runtime.schemas import SCHEMA_VERSIONS


@dataclass
class Measurement:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    iterations: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(batch: int, seconds: np.ndarray) -> Measurement:
    """Percentiles of per-call latencies; throughput is the batch over the median latency."""
    p50, p90, p99 = np.percentile(seconds * 1e3, [50, 90, 99])
    return Measurement(batch, float(p50), float(p90), float(p99), float(batch / np.median(seconds)), len(seconds))


def measure_alternating(pipelines: dict[str, Callable[[np.ndarray], object]], frames: np.ndarray, iterations: int,
                        warmup: int, rounds: int = 5, duration: float | None = None) -> dict[str, Measurement]:
    """Time several pipelines on the same frames in alternating blocks (A×k, B×k, A×k, ...).

    On a shared machine, load comes and goes; timing all of A and then all of
    B lets it fall on one side only. Alternating ``rounds`` blocks spreads it
    over both, while each block is long enough that switching thread pools
    costs little. With ``duration`` (seconds), blocks of ``iterations / rounds`` calls keep alternating until
    that much time has passed, however many calls that takes.
    """
    if iterations < 1 or warmup < 0 or rounds < 1:
        raise ClipedgeError(f"iterations {iterations}, warmup {warmup}: expected iterations ≥ 1 and warmup ≥ 0")
    for run_batch in pipelines.values():
        for _ in range(warmup):
            run_batch(frames)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    block = -(-iterations // rounds)
    started = time.perf_counter()

    def more() -> bool:
        if duration is not None:
            return time.perf_counter() - started < duration
        return len(next(iter(times.values()))) < iterations

    while more():
        for name, run_batch in pipelines.items():
            for _ in range(block if duration is not None else min(block, iterations - len(times[name]))):
                start = time.perf_counter()
                run_batch(frames)
                times[name].append(time.perf_counter() - start)
    return {name: summarise(len(frames), np.array(t)) for name, t in times.items()}


def measure(run_batch: Callable[[np.ndarray], object], frames: np.ndarray, iterations: int, warmup: int) -> Measurement:
    """Time ``run_batch(frames)`` end to end: ``warmup`` untimed calls, then ``iterations`` timed ones."""
    return measure_alternating({"only": run_batch}, frames, iterations, warmup, rounds=1)["only"]


def random_frames(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Camera-like input: uint8 [batch, size, size, 3] noise (the models' cost does not depend on content)."""
    return model_inputs(batch, (size, size, 3), seed)


def model_inputs(batch: int, sample_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """uint8 noise of a model's input shape (model-size images, or a ``--frame`` model's camera frames)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, *sample_shape), dtype=np.uint8)


def parse_counts(text: str, option: str, example: str, what: str) -> list[int]:
    """A comma-separated list of positive whole numbers for ``option``, e.g. "1,8,32" → [1, 8, 32]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ClipedgeError(f"{option} {text}: expected comma-separated whole numbers, e.g. {example}") from None
    if not values or min(values) < 1:
        raise ClipedgeError(f"{option} {text}: expected {what} of at least 1")
    return values


def parse_batches(text: str) -> list[int]:
    """``--batch``: "1,8,32" → [1, 8, 32]."""
    return parse_counts(text, "--batch", DEFAULT_BATCH_PROFILE, "batch sizes")


def top1_agreement(first: Any, second: Any, frames: np.ndarray) -> float:
    """Share of ``frames`` on which two Classifiers pick the same class."""
    return float((first.infer(frames)["probs"].argmax(1) == second.infer(frames)["probs"].argmax(1)).mean())


def _recorded_parity(classifier: Any) -> dict[str, Any] | None:
    text = classifier.metadata.get("parity")
    return json.loads(text) if text else None


def run_bench(model: str | Path, batches: list[int], iterations: int = 50, warmup: int = 10, threads: int | None = None,
              providers: list[str] | None = None, torch_run: str | Path | None = None,
              torch_pipeline: Callable[[np.ndarray], np.ndarray] | None = None,
              cuda_graph: bool = False, rounds: int = 5, baseline: str | Path | None = None,
              images: list[Path] | None = None, frame: str | None = None, jpeg: str | None = None,
              duration: float | None = None, resize_quality: str = "fast") -> dict[str, Any]:
    """Measure ``model`` through the runtime at each batch size, with ``baseline`` (another exported model)
    and ``torch_pipeline`` (the eager PyTorch pipeline of the run ``torch_run``, which the caller builds: the
    runtime never imports torch) in alternating rounds (see :func:`measure_alternating`).
    ``images`` (files) measure the top-1 agreement of model and baseline. ``frame`` ("1920x1080") also times
    whole camera frames through the Classifier (``jpeg``: "" for a generated JPEG, or a file), see frame_bench."""
    from clipedge.runtime.classifier import Classifier

    if jpeg is not None and not frame:
        raise ClipedgeError("--jpeg: times decoding camera frames; give --frame WIDTHxHEIGHT too")
    if duration is not None and duration <= 0:
        raise ClipedgeError(f"--duration {duration}: expected a positive number of seconds")
    if frame:
        parse_frame(frame)

    def open_model(path: str | Path) -> Classifier:
        return Classifier(path, providers=providers, batch_size=max(batches), threads=threads, cuda_graph=cuda_graph,
                          resize_quality=resize_quality)

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clipedge-bench-")))
        classifier = stack.enter_context(open_model(model))
        other = stack.enter_context(open_model(baseline)) if baseline else None
        if other is not None and other.image_size != classifier.image_size:
            raise ClipedgeError(f"--baseline {baseline}: takes {other.image_size} px frames, {model} takes "
                                f"{classifier.image_size} px")
        if other is not None and other.labels != classifier.labels:
            raise ClipedgeError(f"--baseline {baseline}: its classes differ from those of {model}; compare two "
                                "exports of the same run")
        if torch_run and torch_pipeline is None:
            raise ClipedgeError(f"--compare-torch {torch_run}: give the run's PyTorch pipeline (clipedge.torch_pipeline)")
        reference = torch_pipeline
        report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSIONS["bench"], "model": str(model), "backend": classifier.backend_name,
            "precision": classifier.metadata.get("precision"),
            "threads": threads, "image_size": classifier.image_size, "iterations": iterations, "warmup": warmup,
            "rounds": rounds, "torch_run": str(torch_run) if torch_run else None,
            "baseline": {"model": str(baseline), "backend": other.backend_name,
                         "precision": other.metadata.get("precision")} if other else None,
            "recorded_parity": _recorded_parity(classifier), "agreement": None, "results": [],
            "frame_size": frame, "jpeg": None if jpeg is None else (jpeg or "generated"), "duration_s": duration,
            "resize_quality": None if classifier.frame else classifier.resize_quality,
            "fast_resize_parity": json.loads(classifier.metadata.get("fast_resize_parity", "null")),
            "model_frame": classifier.frame.to_dict() if classifier.frame else None,
        }
        if other is not None and images:
            frames = image_frames(classifier, images)
            report["agreement"] = {"images": len(frames), "top1": top1_agreement(classifier, other, frames)}
        for batch in batches:
            pipelines = {"runtime": lambda f: classifier.infer(f)["probs"]}
            if other is not None:
                pipelines["baseline"] = lambda f: other.infer(f)["probs"]
            if reference is not None:
                pipelines["torch"] = reference
            if frame:
                pipelines["frame"] = frame_pipeline(classifier, frame, batch, jpeg, workdir)
            report["results"].append(compare_pipelines(pipelines, model_inputs(batch, classifier.input_sample_shape),
                                                       iterations, warmup, rounds, duration))
    return report


def compare_pipelines(pipelines: dict[str, Callable[[np.ndarray], object]], frames: np.ndarray, iterations: int,
                      warmup: int, rounds: int, duration: float | None = None) -> dict[str, Any]:
    """One batch size's entry of the report: each pipeline's measurement and the runtime's ratios to the others."""
    measured = measure_alternating(pipelines, frames, iterations, warmup, rounds, duration)
    runtime = measured["runtime"]
    entry: dict[str, Any] = {"batch": len(frames), **{name: m.to_dict() for name, m in measured.items()}}
    if "baseline" in measured:
        entry["latency_ratio_p50"] = runtime.p50_ms / measured["baseline"].p50_ms
    if "torch" in measured:
        entry["speedup_p50"] = measured["torch"].p50_ms / runtime.p50_ms
        entry["speedup_throughput"] = runtime.images_per_s / measured["torch"].images_per_s
    if "frame" in measured:
        entry["frame_overhead_p50"] = measured["frame"].p50_ms / runtime.p50_ms
    return entry


def image_frames(classifier: Any, paths: list[Path]) -> np.ndarray:
    """Real images at the model's size (its own resize); unreadable files are skipped."""
    frames, _ = prepare_files(paths, classifier.image_size, classifier.interpolation, classifier.resize_mode,
                              decoding=classifier.decoding)
    if not len(frames):
        raise ClipedgeError(f"--images: none of the {len(paths)} file(s) is a readable image")
    return frames


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Table rows (what, batch, p50, p90, p99, images/s, p50 ratio to baseline, speed-up) of a :func:`run_bench` report."""
    names = {"runtime": f"{report['backend']} {report['precision'] or ''}".strip(), "torch": "pytorch eager"}
    if report.get("frame_size"):
        names["frame"] = f"frame {report['frame_size']}{' jpeg' if report['jpeg'] else ''} → probs"
    if report["baseline"]:
        names["baseline"] = f"baseline: {report['baseline']['backend']} {report['baseline']['precision'] or ''}".strip()
    rows = []
    for entry in report["results"]:
        for key in ("runtime", "baseline", "torch", "frame"):
            if key in entry:
                m = entry[key]
                ratio = round(entry["latency_ratio_p50"], 2) if key == "runtime" and "latency_ratio_p50" in entry else None
                speedup = round(entry["speedup_p50"], 2) if key == "runtime" and "speedup_p50" in entry else None
                rows.append([names[key], entry["batch"], round(m["p50_ms"], 2), round(m["p90_ms"], 2),
                             round(m["p99_ms"], 2), round(m["images_per_s"], 1), ratio, speedup])
    return rows


REPORT_HEADERS = ["model", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "p50 / baseline", "speed-up over torch p50"]
