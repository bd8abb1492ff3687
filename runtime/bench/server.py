"""``clipedge bench URL --concurrency 1,8``: a Triton-served model under concurrent clients.

Each of C client threads holds its own Classifier (its own connection) and sends ``iterations`` requests
of B frames back to back, so the server sees C requests in flight and its dynamic batcher can merge them.
Client-side latency percentiles and images/s (all images over the wall time) are measured here; the
server's own split of each request's time (queue wait vs compute) comes from the difference of its
statistics before and after, as do the inference and execution counts that show batching at work
(more inferences than executions).

The report (``--json``)::

    {"model": str, "backend": str, "image_size": int, "iterations": int, "warmup": int,
     "results": [{"batch", "concurrency", "requests", "p50_ms", "p99_ms", "images_per_s",
                  "server_queue_ms", "server_compute_ms", "inferences", "executions"}]}
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.bench.local import parse_counts, random_frames
from clipedge.runtime.classifier import Classifier


def parse_concurrency(text: str) -> list[int]:
    """``--concurrency``: "1,8" → [1, 8]."""
    return parse_counts(text, "--concurrency", "1,8", "client counts")


def _counts(stats: dict[str, Any]) -> dict[str, int]:
    """Flat integer counters of one model's statistics (gRPC's JSON writes uint64 as strings)."""
    flat = {"inferences": int(stats.get("inference_count", 0)), "executions": int(stats.get("execution_count", 0))}
    for phase in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
        entry = stats.get("inference_stats", {}).get(phase, {})
        flat[f"{phase}_count"], flat[f"{phase}_ns"] = int(entry.get("count", 0)), int(entry.get("ns", 0))
    return flat


def server_counts(classifier: Classifier) -> dict[str, int]:
    return _counts(classifier.backend.statistics())


def _per_request_ms(delta: dict[str, int], phase: str) -> float:
    return delta[f"{phase}_ns"] / max(delta[f"{phase}_count"], 1) / 1e6


def measure_concurrent(url: str, batch: int, concurrency: int, iterations: int, warmup: int) -> dict[str, Any]:
    """One (batch, concurrency) cell: C threads × ``iterations`` requests of ``batch`` frames each."""
    clients = [Classifier(url, batch_size=batch) for _ in range(concurrency)]
    try:
        frames = random_frames(batch, clients[0].image_size)
        for client in clients:
            for _ in range(warmup):
                client.infer(frames)
        latencies: list[list[float]] = [[] for _ in clients]
        errors: list[str] = []
        start_line = threading.Barrier(concurrency + 1)

        def work(index: int) -> None:
            start_line.wait()
            try:
                for _ in range(iterations):
                    began = time.perf_counter()
                    clients[index].infer(frames)
                    latencies[index].append(time.perf_counter() - began)
            except ClipedgeError as error:
                errors.append(str(error))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        before = server_counts(clients[0])
        start_line.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        after = server_counts(clients[0])
        if errors:
            raise ClipedgeError(f"{len(errors)} of {concurrency} clients failed: {errors[0]}")
    finally:
        for client in clients:
            client.close()
    delta = {key: after[key] - before[key] for key in after}
    seconds = np.concatenate([np.array(t) for t in latencies]) * 1e3
    requests = len(seconds)
    return {"batch": batch, "concurrency": concurrency, "requests": requests,
            "p50_ms": float(np.percentile(seconds, 50)), "p99_ms": float(np.percentile(seconds, 99)),
            "images_per_s": requests * batch / wall, "server_queue_ms": _per_request_ms(delta, "queue"),
            "server_compute_ms": _per_request_ms(delta, "compute_infer"),
            "inferences": delta["inferences"], "executions": delta["executions"]}


def run_server_bench(url: str, batches: list[int], concurrencies: list[int], iterations: int = 50,
                     warmup: int = 5) -> dict[str, Any]:
    with Classifier(url) as probe:
        report: dict[str, Any] = {"model": url, "backend": probe.backend_name, "image_size": probe.image_size,
                                  "iterations": iterations, "warmup": warmup, "results": []}
    for batch in batches:
        for concurrency in concurrencies:
            report["results"].append(measure_concurrent(url, batch, concurrency, iterations, warmup))
    return report


SERVER_HEADERS = ["batch", "clients", "requests", "p50 ms", "p99 ms", "images/s", "server queue ms/request",
                  "server compute ms/request", "inferences / executions"]


def server_rows(report: dict[str, Any]) -> list[list[Any]]:
    return [[r["batch"], r["concurrency"], r["requests"], round(r["p50_ms"], 2), round(r["p99_ms"], 2),
             round(r["images_per_s"], 1), round(r["server_queue_ms"], 3), round(r["server_compute_ms"], 3),
             f"{r['inferences']} / {r['executions']}"] for r in report["results"]]
