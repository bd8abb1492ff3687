"""Latency and throughput of an exported model, optionally beside the PyTorch eager pipeline it replaces.

What is timed is what a camera loop pays: uint8 frames at model size in host
memory in, probabilities in host memory out. Latency percentiles come from
``iterations`` timed calls after ``warmup`` untimed ones; throughput is the
batch size over the median latency. Both pipelines see the same frames in the
same process with the same thread count, timed in alternating rounds.

The report (``clipedge bench --json``)::

    {"model": str, "backend": str, "threads": int, "image_size": int, "iterations": int, "warmup": int, "rounds": int,
     "torch_run": str | null,
     "results": [{"batch": int,
                  "runtime": {"batch", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "iterations"},
                  "torch":   {... the same keys; only with --compare-torch},
                  "speedup_p50": float,          # torch p50 / runtime p50; only with --compare-torch
                  "speedup_throughput": float}]} # runtime images/s / torch images/s; only with --compare-torch
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipedge.errors import ClipedgeError


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
                        warmup: int, rounds: int = 5) -> dict[str, Measurement]:
    """Time several pipelines on the same frames in alternating blocks (A×k, B×k, A×k, ...).

    On a shared machine, load comes and goes; timing all of A and then all of
    B lets it fall on one side only. Alternating ``rounds`` blocks spreads it
    over both, while each block is long enough that switching thread pools
    costs little.
    """
    if iterations < 1 or warmup < 0 or rounds < 1:
        raise ClipedgeError(f"iterations {iterations}, warmup {warmup}: expected iterations ≥ 1 and warmup ≥ 0")
    for run_batch in pipelines.values():
        for _ in range(warmup):
            run_batch(frames)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    block = -(-iterations // rounds)
    while len(next(iter(times.values()))) < iterations:
        for name, run_batch in pipelines.items():
            for _ in range(min(block, iterations - len(times[name]))):
                start = time.perf_counter()
                run_batch(frames)
                times[name].append(time.perf_counter() - start)
    return {name: summarise(len(frames), np.array(t)) for name, t in times.items()}


def measure(run_batch: Callable[[np.ndarray], object], frames: np.ndarray, iterations: int, warmup: int) -> Measurement:
    """Time ``run_batch(frames)`` end to end: ``warmup`` untimed calls, then ``iterations`` timed ones."""
    return measure_alternating({"only": run_batch}, frames, iterations, warmup, rounds=1)["only"]


def random_frames(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Camera-like input: uint8 [batch, size, size, 3] noise (the models' cost does not depend on content)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def parse_batches(text: str) -> list[int]:
    """"1,8,32" → [1, 8, 32]."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ClipedgeError(f"--batch {text}: expected comma-separated whole numbers, e.g. 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise ClipedgeError(f"--batch {text}: expected batch sizes of at least 1")
    return sizes


def torch_reference(run: str | Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """The eager PyTorch pipeline of a run (clipedge.torch_pipeline), imported only when asked for."""
    try:
        pipeline = import_module("clipedge.torch_pipeline")
    except ImportError as error:  # a torch-free runtime install
        raise ClipedgeError(f"--compare-torch needs PyTorch and open_clip, which this install lacks ({error})") from None
    return pipeline.eager_pipeline(run, threads)


def run_bench(model: str | Path, batches: list[int], iterations: int = 50, warmup: int = 10, threads: int | None = None,
              providers: list[str] | None = None, torch_run: str | Path | None = None,
              cuda_graph: bool = False, rounds: int = 5) -> dict[str, Any]:
    """Measure ``model`` through the runtime at each batch size (and the eager pipeline of ``torch_run``,
    in alternating rounds: see :func:`measure_alternating`)."""
    from .classifier import Classifier

    classifier = Classifier(model, providers=providers, batch_size=max(batches), threads=threads, cuda_graph=cuda_graph)
    reference = torch_reference(torch_run, threads) if torch_run else None
    report: dict[str, Any] = {"model": str(model), "backend": classifier.backend_name, "threads": threads,
                              "image_size": classifier.image_size, "iterations": iterations, "warmup": warmup, "rounds": rounds,
                              "torch_run": str(torch_run) if torch_run else None, "results": []}
    with classifier:
        for batch in batches:
            frames = random_frames(batch, classifier.image_size)
            pipelines = {"runtime": lambda f: classifier.infer(f)["probs"]}
            if reference is not None:
                pipelines["torch"] = reference
            measured = measure_alternating(pipelines, frames, iterations, warmup, rounds)
            runtime = measured["runtime"]
            entry: dict[str, Any] = {"batch": batch, "runtime": runtime.to_dict()}
            if reference is not None:
                torch_eager = measured["torch"]
                entry["torch"] = torch_eager.to_dict()
                entry["speedup_p50"] = torch_eager.p50_ms / runtime.p50_ms
                entry["speedup_throughput"] = runtime.images_per_s / torch_eager.images_per_s
            report["results"].append(entry)
    return report


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Table rows (backend, batch, p50, p90, p99, images/s, speed-up) for a :func:`run_bench` report."""
    rows = []
    for entry in report["results"]:
        for key, name in (("runtime", report["backend"]), ("torch", "pytorch eager")):
            if key in entry:
                m = entry[key]
                speedup = round(entry["speedup_p50"], 2) if key == "runtime" and "speedup_p50" in entry else None
                rows.append([name, entry["batch"], round(m["p50_ms"], 2), round(m["p90_ms"], 2), round(m["p99_ms"], 2),
                             round(m["images_per_s"], 1), speedup])
    return rows


REPORT_HEADERS = ["backend", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "speed-up p50"]
