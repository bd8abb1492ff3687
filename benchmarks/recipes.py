"""Official against fast training recipes, on the embedded task, chosen by val accuracy only.

CLIP-Adapter: the official recipe (CoOp's rn50.yaml via Dassl: SGD, warm-up,
per-epoch cosine, random resized crop at scale 0.08–1) on cached views, with
the default number of views (OFFICIAL_VIEWS) and with 10 (the trend says what
views that recur less often would still add; fresh crops every epoch, as the
official code draws them, are the limit of many views), against clipedge's
fast AdamW recipe. Linear probe: the CLIP paper's
protocol (eval-transform features, no augmentation) against logistic
regression on the augmented views.

Every cell is what ``clipedge train`` computes on the task ``clipedge demo``
writes (clipedge-tiny; the same split, few-shot sampler, feature cache and
head fit), few-shot seeds × shots, with one backbone and feature cache for all. The
default of each method is the recipe with the higher mean **val** top-1 over
all cells (the official one on a tie); test top-1 is printed beside it as a
report and decides nothing. Results are appended per cell to ``results.jsonl``,
so a killed run continues where it stopped.

    python benchmarks/recipes.py [--out bench-recipes] [--threads 2] [--seeds 1,2,3] [--shots 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from cells import FewShotCells

from clipedge.backbone import load_backbone
from clipedge.core.tables import format_table
from clipedge.data import load_labelled_images
from clipedge.figures import pyplot, save_png
from clipedge.heads.clip_adapter import DEFAULT_RECIPE as CLIP_ADAPTER_DEFAULT
from clipedge.heads.linear_probe import DEFAULT_RECIPE as LINEAR_PROBE_DEFAULT
from clipedge.prompts import resolve_templates
from clipedge.synthetic import write_task

#: row label -> (method, recipe, extra train options)
CONFIGS = {
    "clip-adapter official": ("clip-adapter", "official", {}),
    "clip-adapter official, 10 views": ("clip-adapter", "official", {"views": 10}),
    "clip-adapter fast": ("clip-adapter", "fast", {}),
    "linear-probe official": ("linear-probe", "official", {}),
    "linear-probe fast": ("linear-probe", "fast", {}),
}
#: the rows that compete for each method's default (same number of views as the default would use)
CANDIDATES = {"clip-adapter": ("clip-adapter official", "clip-adapter fast"),
              "linear-probe": ("linear-probe official", "linear-probe fast")}
SHIPPED_DEFAULTS = {"clip-adapter": CLIP_ADAPTER_DEFAULT, "linear-probe": LINEAR_PROBE_DEFAULT}
RESULTS = "results.jsonl"


def cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def read_results(path: Path) -> dict[tuple[str, int, int], dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(row["config"], row["shots"], row["seed"]): row for row in rows}


def run_cells(data: Path, out: Path, configs: dict, shots: list[int], seeds: list[int]) -> dict:
    """Every missing cell, appended to RESULTS as it finishes."""
    results_path = out / RESULTS
    done = read_results(results_path)
    todo = [(seed, k, label) for seed in seeds for k in shots for label in configs if (label, k, seed) not in done]
    if not todo:
        return done
    cells = FewShotCells(load_backbone("clipedge-tiny", device="cpu"), load_labelled_images(data),
                         resolve_templates("single"), out / "cache")
    for seed, k, label in todo:
        method, recipe, extra = configs[label]
        started = time.perf_counter()
        scores = cells.run(method, k, seed, recipe=recipe, **extra)
        row = {"config": label, "method": method, "recipe": recipe, **extra, "shots": k, "seed": seed, **scores,
               "total_s": time.perf_counter() - started}
        with results_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[label, k, seed] = row
        print(f"{label:34s} {k:2d}-shot seed {seed}: val {100 * row['val_top1']:.1f} "
              f"test {100 * row['test_top1']:.1f} ({row['total_s']:.1f} s)", flush=True)
    return done


def table(done: dict, configs: dict, shots: list[int], seeds: list[int]) -> str:
    rows = []
    for label in configs:
        values = [[done[label, k, s] for s in seeds] for k in shots]
        rows.append([label,
                     *(cell([r["val_top1"] for r in by_seed]) for by_seed in values),
                     *(cell([r["test_top1"] for r in by_seed]) for by_seed in values),
                     f"{100 * statistics.fmean(r['val_top1'] for by_seed in values for r in by_seed):.1f}",
                     round(statistics.fmean(r["head_s"] for by_seed in values for r in by_seed), 2)])
    headers = ["recipe", *(f"val {k}-shot" for k in shots), *(f"test {k}-shot" for k in shots), "val mean", "head s (wall)"]
    return format_table(headers, rows)


def choose_defaults(done: dict, shots: list[int], seeds: list[int]) -> dict[str, str]:
    """Per method, the recipe with the higher mean val top-1 over every cell; official wins a tie."""
    chosen = {}
    for method, (official, fast) in CANDIDATES.items():
        mean = {label: statistics.fmean(done[label, k, s]["val_top1"] for k in shots for s in seeds) for label in (official, fast)}
        chosen[method] = "fast" if mean[fast] > mean[official] else "official"
    return chosen


def plot(done: dict, configs: dict, shots: list[int], seeds: list[int], path: Path, title: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        for label in configs:
            per_shot = [[100 * done[label, k, s][f"{split}_top1"] for s in seeds] for k in shots]
            means = [statistics.fmean(v) for v in per_shot]
            spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_shot]
            ax.errorbar(shots, means, yerr=spread, fmt="-o" if "clip-adapter" in label else "--s", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("training images per class")
        ax.set_title(f"{split} top-1 (%)" + (" — chooses the default" if split == "val" else " — report only"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-recipes"))
    parser.add_argument("--task", default="colours-tinted")
    parser.add_argument("--images-per-class", type=int, default=100, help="as clipedge demo")
    parser.add_argument("--data-seed", type=int, default=1, help="as clipedge demo's --seed")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--shots", default="1,4,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the cells and the choice as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds, shots = [int(s) for s in args.seeds.split(",")], [int(k) for k in args.shots.split(",")]

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data" / args.task
    if not data.is_dir():
        write_task(args.task, data, images_per_class=args.images_per_class, seed=args.data_seed)
    done = run_cells(data, args.out, CONFIGS, shots, seeds)
    chosen = choose_defaults(done, shots, seeds)
    figure = args.out / "recipes.png"
    plot(done, CONFIGS, shots, seeds, figure, f"{args.task} on clipedge-tiny, seeds {args.seeds} (mean ± std)")
    if args.json:
        print(json.dumps({"cells": list(done.values()), "chosen": chosen, "shipped": SHIPPED_DEFAULTS}, indent=2))
        return
    print(f"\n{args.task}, clipedge-tiny, {args.images_per_class} images per class, few-shot seeds {args.seeds}; "
          f"top-1 %, mean ± std over seeds; {args.threads} torch threads")
    print(table(done, CONFIGS, shots, seeds))
    for method, recipe in chosen.items():
        note = "" if recipe == SHIPPED_DEFAULTS[method] else f"  (shipped default is {SHIPPED_DEFAULTS[method]}: update it)"
        print(f"default by val: {method} --recipe {recipe}{note}")
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
