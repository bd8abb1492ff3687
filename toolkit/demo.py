"""``clipedge demo``: the whole job on the embedded default, offline, in a few minutes.

It writes a generated few-shot task with a domain shift as an ordinary image
folder, trains every method at several shot counts on the shipped
``clipedge-tiny`` CLIP (sharing one feature cache), prints the paper-style
table, plots accuracy against shots, and hands the best run to the later
stages: a fused, parity-checked ONNX export and the torch-free runtime,
timed against the PyTorch eager pipeline it replaces.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ClipedgeError
from .figures import pyplot, save_png
from .heads import METHODS
from .tables import format_table
from .training import TrainResult, train

log = logging.getLogger(__name__)

FAST_SHOTS = (1, 4, 16)
FULL_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_TASK = "colours-tinted"
IMAGES_PER_CLASS = 60
RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_shots.png"


@dataclass
class DemoResult:
    out: Path
    task: str
    accuracy: dict[str, dict[int, float]]
    best_run: Path
    timings: dict[str, float] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "backbone": "clipedge-tiny",
            "accuracy": {m: {str(k): v for k, v in by_shots.items()} for m, by_shots in self.accuracy.items()},
            "best_run": str(self.best_run),
            "timings_s": self.timings,
            **self.stages,
        }


def accuracy_table(accuracy: dict[str, dict[int, float]], shots: tuple[int, ...]) -> str:
    rows = [[method, *(round(100 * accuracy[method][k], 1) for k in shots)] for method in accuracy]
    return format_table(["method (test top-1 %)", *(f"{k}-shot" for k in shots)], rows)


def save_plot(accuracy: dict[str, dict[int, float]], shots: tuple[int, ...], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, by_shots in accuracy.items():
        style = "--" if method == "zero-shot" else "-o"
        ax.plot(shots, [100 * by_shots[k] for k in shots], style, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def run_demo(
    out: str | Path = "clipedge-demo",
    full: bool = False,
    seed: int = 1,
    device: str = "auto",
    task: str = DEFAULT_TASK,
    images_per_class: int = IMAGES_PER_CLASS,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Write the task data, compare all methods across shots, export the best run and time the runtime."""
    from .synthetic import write_task

    out = Path(out)
    shots = FULL_SHOTS if full else FAST_SHOTS
    started = time.perf_counter()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ClipedgeError(f"--out {out}: folder is not writable")

    echo(f"[1] writing the '{task}' task ({images_per_class} images per class) to {out / 'data'}")
    data = write_task(task, out / "data" / task, images_per_class=images_per_class, seed=seed)
    timings = {"data": time.perf_counter() - started}

    echo(f"[2] training {len(METHODS)} methods at {', '.join(map(str, shots))} shots on clipedge-tiny")
    mark = time.perf_counter()
    accuracy: dict[str, dict[int, float]] = {method: {} for method in METHODS}
    results: dict[tuple[str, int], TrainResult] = {}
    for k in shots:
        for method in METHODS:
            result = train(
                data, out / "runs" / f"{method}-{k}shot", method=method, shots=k, seed=seed, device=device,
                cache_dir=out / "cache", overwrite=True, progress=False,
            )
            results[(method, k)] = result
            accuracy[method][k] = result.metrics["test_top1"]
    timings["training"] = time.perf_counter() - mark
    echo(accuracy_table(accuracy, shots))

    best_method = max((m for m in METHODS if m != "zero-shot"), key=lambda m: accuracy[m][shots[-1]])
    best = results[(best_method, shots[-1])]
    save_plot(accuracy, shots, out / PLOT_FILE, f"{task} on clipedge-tiny")
    echo(f"\nbest at {shots[-1]} shots: {best_method} ({100 * accuracy[best_method][shots[-1]]:.1f} % vs "
         f"zero-shot {100 * accuracy['zero-shot'][shots[-1]]:.1f} %); plot: {out / PLOT_FILE}")

    demo = DemoResult(out, task, accuracy, best.run_dir, timings)
    for stage in (export_stage, runtime_stage):
        mark = time.perf_counter()
        demo.stages.update(stage(best.run_dir, out, echo))
        timings[stage.__name__] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    (out / RESULTS_FILE).write_text(json.dumps(demo.to_json(), indent=2) + "\n", encoding="utf-8")
    echo(f"results: {out / RESULTS_FILE}  (total {timings['total']:.0f} s)")
    return demo


def export_stage(run_dir: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """[3] One fused ONNX model, uint8 pixels in, probabilities out, checked against PyTorch."""
    from clipedge.export import export_model

    result = export_model(run_dir, out / "model.onnx")
    parity = result.parity
    echo(f"\n[3] exported {result.artifact} ({result.size_bytes / 1e6:.1f} MB, {result.nodes_after} nodes): "
         f"top-1 agreement {100 * parity['agreement_pipeline']:.1f} %, max |Δprob| {parity['max_dprob_pipeline']:.1e} "
         f"against the PyTorch pipeline on {parity['images']} images")
    return {"export": {"artifact": str(result.artifact), "size_bytes": result.size_bytes, "nodes": result.nodes_after,
                       "parity": parity, "seconds": result.seconds}}


def runtime_stage(run_dir: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """[4] The torch-free runtime on the exported model: a few predictions, then latency against eager PyTorch."""
    from clipedge.runtime import Classifier
    from clipedge.runtime.bench import measure, random_frames

    from .run_features import run_data
    from .run_dir import load_run
    from .torch_pipeline import eager_pipeline

    threads = os.cpu_count() or 1
    classifier = Classifier(out / "model.onnx", threads=threads)
    test = run_data(load_run(run_dir)).splits["test"]
    samples = test[:: max(1, len(test) // 4)][:4]  # four test images spread over the classes
    predictions = classifier([s.path for s in samples])
    echo(f"\n[4] torch-free runtime ({classifier.backend_name}) on test images:")
    echo(format_table(["image", "true class", "predicted", "score"],
                      [[s.relpath, classifier.labels[s.label], p.label, round(p.score, 3)] for s, p in zip(samples, predictions)]))
    eager = eager_pipeline(run_dir, threads)
    rows, figures = [], {}
    for batch in (1, 32):
        frames = random_frames(batch, classifier.image_size)
        runtime = measure(lambda f: classifier.infer(f)["probs"], frames, iterations=30, warmup=5)
        torch_eager = measure(eager, frames, iterations=30, warmup=5)
        figures[str(batch)] = {"runtime": runtime.to_dict(), "torch": torch_eager.to_dict()}
        rows += [[classifier.backend_name, batch, round(runtime.p50_ms, 2), round(runtime.images_per_s, 1)],
                 ["pytorch eager", batch, round(torch_eager.p50_ms, 2), round(torch_eager.images_per_s, 1)]]
    echo(f"\nlatency on this machine ({threads} CPU threads), uint8 frames in, probabilities out:")
    echo(format_table(["backend", "batch", "p50 ms", "images/s"], rows))
    return {"runtime": {"backend": classifier.backend_name, "threads": threads, "latency": figures}}
