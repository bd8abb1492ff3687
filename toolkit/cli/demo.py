"""``clipedge demo``: the whole job on the embedded default, offline, in a few minutes.

It writes a generated few-shot task with a domain shift as an ordinary image
folder, trains every method at several shot counts on the shipped
``clipedge-tiny`` CLIP (sharing one feature cache), prints the paper-style
table, plots accuracy against shots, and hands the best run by mean val top-1
(test accuracy is printed as the report and chooses nothing) to the later
stages: confidence calibration with an "unknown" threshold, a fused,
parity-checked ONNX export and the torch-free runtime, timed against the
PyTorch eager pipeline it replaces.

As in the papers' protocol, every figure is the mean over several few-shot
draws (seeds): with a few dozen test images per class, one draw moves
accuracy by a few points, enough to hide the trend over shots.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipedge.core.atomic import write_atomically
from clipedge.core.errors import ClipedgeError
from clipedge.core.tables import format_table
from clipedge.figures import pyplot, save_png
from clipedge.heads import METHODS
from clipedge.heads.selection import TIE_RULE, best_method
from clipedge.training import train

log = logging.getLogger(__name__)

FAST_SHOTS = (1, 4, 16)
FULL_SHOTS = (1, 2, 4, 8, 16)
SEEDS = 3
DEFAULT_TASK = "colours-tinted"
IMAGES_PER_CLASS = 100
RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_shots.png"


@dataclass
class Comparison:
    """Every method at every shot count and draw: val figures to choose by, test figures to report."""

    #: method -> shots -> test top-1 of each seed (reported, never used to choose)
    per_seed: dict[str, dict[int, list[float]]]
    #: method -> shots -> val top-1 of each seed (what the choice reads)
    per_seed_val: dict[str, dict[int, list[float]]]
    #: (method, shots) -> the first draw's run directory
    runs: dict[tuple[str, int], Path]


@dataclass
class DemoResult:
    out: Path
    task: str
    #: method -> shots -> test top-1 of each seed
    per_seed: dict[str, dict[int, list[float]]]
    seeds: list[int]
    best_run: Path
    timings: dict[str, float] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    #: method -> shots -> val top-1 of each seed; the best run is chosen on these
    per_seed_val: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    @property
    def accuracy(self) -> dict[str, dict[int, float]]:
        """Mean test top-1 over the seeds."""
        return _means(self.per_seed)

    def to_json(self) -> dict[str, Any]:
        def by_str(table: dict[str, dict[int, Any]]) -> dict[str, dict[str, Any]]:
            return {m: {str(k): v for k, v in by_shots.items()} for m, by_shots in table.items()}

        return {
            "task": self.task,
            "backbone": "clipedge-tiny",
            "seeds": self.seeds,
            "accuracy": by_str(self.accuracy),
            "accuracy_per_seed": by_str(self.per_seed),
            "val_accuracy": by_str(_means(self.per_seed_val)),
            "val_accuracy_per_seed": by_str(self.per_seed_val),
            "best_run": str(self.best_run),
            "best_run_chosen_by": f"mean val top-1 at the largest shot count, {TIE_RULE} (test decides nothing)",
            "timings_s": self.timings,
            **self.stages,
        }


def _means(per_seed: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    return {m: {k: statistics.fmean(v) for k, v in by_shots.items()} for m, by_shots in per_seed.items()}


def compare_methods(data: Path, runs_dir: Path, cache_dir: Path, shots: tuple[int, ...], draws: list[int],
                    device: str = "auto", progress: bool = False, methods: tuple[str, ...] = METHODS,
                    **train_options: Any) -> Comparison:
    """Train every method at every shot count and draw into ``runs_dir``, sharing one feature cache; with
    ``progress``, one bar over the whole method × shots × draw grid."""
    per_seed: dict[str, dict[int, list[float]]] = {method: {k: [] for k in shots} for method in methods}
    per_seed_val: dict[str, dict[int, list[float]]] = {method: {k: [] for k in shots} for method in methods}
    runs: dict[tuple[str, int], Path] = {}
    runs_dir.mkdir(parents=True, exist_ok=True)
    grid = [(draw, k, method) for draw in draws for k in shots for method in methods]
    bar = tqdm(grid, desc="training", unit="run", disable=not progress, leave=False)
    for draw, k, method in bar:
        bar.set_postfix_str(f"{method}, {k}-shot, seed {draw}")
        result = train(data, runs_dir / f"{method}-{k}shot-seed{draw}", method=method, shots=k, seed=draw,
                       device=device, cache_dir=cache_dir, overwrite=True, progress=False, **train_options)
        runs.setdefault((method, k), result.run_dir)  # the first draw's run goes on to export
        per_seed[method][k].append(result.metrics["test_top1"])
        per_seed_val[method][k].append(result.metrics["val_top1"])
    return Comparison(per_seed, per_seed_val, runs)


def choose_best_method(per_seed_val: dict[str, dict[int, list[float]]], shots: int) -> str:
    """The method with the best mean val top-1 at ``shots``, by ``--method auto``'s rule (ties: the simpler head)."""
    means = _means(per_seed_val)
    return best_method({method: means[method][shots] for method in per_seed_val})


def accuracy_table(per_seed: dict[str, dict[int, list[float]]], shots: tuple[int, ...]) -> str:
    """Mean ± standard deviation over seeds, in percent, methods × shots."""
    def cell(values: list[float]) -> str:
        mean = 100 * statistics.fmean(values)
        return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"

    rows = [[method, *(cell(per_seed[method][k]) for k in shots)] for method in per_seed]
    return format_table(["method (test top-1 %)", *(f"{k}-shot" for k in shots)], rows)


def save_plot(per_seed: dict[str, dict[int, list[float]]], shots: tuple[int, ...], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, by_shots in per_seed.items():
        means = [100 * statistics.fmean(by_shots[k]) for k in shots]
        spread = [100 * statistics.stdev(by_shots[k]) if len(by_shots[k]) > 1 else 0.0 for k in shots]
        style = "--" if method == "zero-shot" else "-o"
        ax.errorbar(shots, means, yerr=spread, fmt=style, capsize=3, label=method)
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
    seeds: int = SEEDS,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    methods: tuple[str, ...] = METHODS,
) -> DemoResult:
    """Write the task data, compare all methods across shots and seeds, then calibrate, export and time the best run."""
    from clipedge.synthetic import write_task

    out = Path(out)
    shots = FULL_SHOTS if full else FAST_SHOTS
    if seeds < 1:
        raise ClipedgeError(f"--seeds {seeds}: expected at least 1 few-shot draw")
    draws = list(range(seed, seed + seeds))
    started = time.perf_counter()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ClipedgeError(f"--out {out}: folder is not writable")

    echo(f"[1] writing the '{task}' task ({images_per_class} images per class) to {out / 'data'}")
    data = write_task(task, out / "data" / task, images_per_class=images_per_class, seed=seed)
    timings = {"data": time.perf_counter() - started}

    echo(f"[2] training {len(methods)} methods at {', '.join(map(str, shots))} shots on clipedge-tiny, "
         f"{seeds} few-shot draw(s) each (seeds {', '.join(map(str, draws))})")
    mark = time.perf_counter()
    comparison = compare_methods(data, out / "runs", out / "cache", shots, draws, device, progress=progress,
                                 methods=methods)
    per_seed, largest = comparison.per_seed, shots[-1]
    timings["training"] = time.perf_counter() - mark
    echo(accuracy_table(per_seed, shots))

    best_method = choose_best_method(comparison.per_seed_val, largest)
    demo = DemoResult(out, task, per_seed, draws, comparison.runs[(best_method, largest)], timings,
                      per_seed_val=comparison.per_seed_val)
    val_accuracy, accuracy = _means(comparison.per_seed_val), demo.accuracy
    save_plot(per_seed, shots, out / PLOT_FILE, f"{task} on clipedge-tiny (mean of {seeds} draws)")
    echo(f"\nbest at {largest} shots by mean val top-1: {best_method} (val {100 * val_accuracy[best_method][largest]:.1f} %; "
         f"test {100 * accuracy[best_method][largest]:.1f} % vs zero-shot {100 * accuracy['zero-shot'][largest]:.1f} %, "
         f"reported only, mean of {seeds} draws); plot: {out / PLOT_FILE}")
    echo(f"its seed-{draws[0]} run (test {100 * per_seed[best_method][largest][0]:.1f} %) goes on: {demo.best_run}")

    for stage in (calibrate_stage, export_stage, runtime_stage):
        mark = time.perf_counter()
        demo.stages.update(stage(demo.best_run, out, echo))
        timings[stage.__name__] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    write_atomically(out / RESULTS_FILE, json.dumps(demo.to_json(), indent=2) + "\n")
    echo(f"results: {out / RESULTS_FILE}  (total {timings['total']:.0f} s)")
    return demo


def calibrate_stage(run_dir: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """[3] Trustworthy confidences: a temperature and an "unknown" threshold, fitted on the run's val images."""
    from clipedge.calibration.calibrate import calibrate

    report = calibrate(run_dir, progress=False)
    rejection = (f"no \"unknown\" threshold: {report.threshold_withheld}" if report.threshold is None else
                 f"below {report.threshold:.3g} ({report.rejection_score}) a frame is \"unknown\" ({100 * report.val_frr:.1f} % "
                 f"of val rejected; val AUROC {report.auroc[report.rejection_score]:.2f} on held-out classes)")
    echo(f"\n[3] calibrated on val: temperature {report.temperature:.3g}, ECE {report.ece_before:.3f} → "
         f"{report.ece_after:.3f}; {rejection}; {report.diagram}")
    return {"calibration": report.to_manifest()}


def export_stage(run_dir: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """[4] One fused ONNX model, uint8 pixels in, probabilities out, checked against PyTorch."""
    from clipedge.export import export_model

    result = export_model(run_dir, out / "model.onnx")
    parity = result.parity
    echo(f"\n[4] exported {result.artifact} ({result.size_bytes / 1e6:.1f} MB, {result.nodes_after} nodes): "
         f"top-1 agreement {100 * parity['agreement_pipeline']:.1f} %, max |Δprob| {parity['max_dprob_pipeline']:.1e} "
         f"against the PyTorch pipeline on {parity['images']} images")
    return {"export": {"artifact": str(result.artifact), "size_bytes": result.size_bytes, "nodes": result.nodes_after,
                       "parity": parity, "seconds": result.seconds}}


def runtime_stage(run_dir: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """[5] The torch-free runtime on the exported model: a few predictions, then latency against eager PyTorch."""
    from clipedge.run_dir import load_run
    from clipedge.run_features import run_data
    from clipedge.runtime import Classifier
    from clipedge.runtime.bench.local import measure, random_frames
    from clipedge.torch_pipeline import eager_pipeline

    threads = os.cpu_count() or 1
    classifier = Classifier(out / "model.onnx", threads=threads)
    test = run_data(load_run(run_dir)).splits["test"]
    samples = test[:: max(1, len(test) // 4)][:4]  # four test images spread over the classes
    predictions = classifier([s.path for s in samples])
    echo(f"\n[5] torch-free runtime ({classifier.backend_name}) on test images:")
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
