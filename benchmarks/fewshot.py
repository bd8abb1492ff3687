"""The papers' few-shot protocol on CoOp's 11 datasets, for users who have the data and the weights.

For each dataset found under ``--root`` (CoOp's layout, see coop_datasets.py),
each shot count and seed: CoOp's few-shot split (``shots`` training images per
class drawn by the seed, a val set of min(shots, 4) images per class drawn
the same way, the full test set), then every method with its default recipe
and CoOp's prompt for the dataset, each cell as ``clipedge train`` computes it
(benchmarks/cells.py). One backbone per run, loaded once. Features are cached
per dataset and shared by every method and seed (test features are encoded once). Each finished cell is appended to
``results.csv`` at once, so a killed run continues where it stopped; the
markdown table (``results.md``, mean ± std over seeds, with the papers'
published numbers beside a cell where they exist, marked "reported") and a
plot per dataset are rewritten at the end. A dataset whose folder or split
file is missing is reported and skipped.

    python benchmarks/fewshot.py --root DATA --out results/ --backbone RN50 --pretrained openai
    python benchmarks/fewshot.py --root DATA --datasets OxfordPets,EuroSAT --shots 1,4 --seeds 1,2

Without the data, ``--tasks`` runs the same grid on clipedge's generated tasks
(clipedge.synthetic; written under ``--out``, split as ``clipedge train`` splits a
folder, whole val split, the single template) on the shipped clipedge-tiny:

    python benchmarks/fewshot.py --tasks colours-tinted,shapes-sketch,shapes-dusk --backbone clipedge-tiny --pretrained clipedge

Every row is marked with what its method chooses on val (``nothing``: one fixed
recipe, CLAP's protocol), gives the mean head-fitting seconds, and an ``auto``
row shows the test top-1 of the method ``--method auto``'s rule picks from the
rows' val figures in each (shots, seed) cell.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from cells import FewShotCells
from coop_datasets import DATASETS, CoOpDataset, Row, dataset_named
from fewshot_report import markdown, plot, summarise
from tqdm import tqdm

from clipedge.backbone import Backbone, load_backbone
from clipedge.core.errors import ClipedgeError
from clipedge.data import Sample, load_labelled_images, read_split_file
from clipedge.heads import METHODS
from clipedge.prompts import resolve_templates
from clipedge.synthetic import TASKS, write_task
from clipedge.training import resolve_device

FIELDS = ["dataset", "backbone", "pretrained", "method", "shots", "seed", "val_top1", "test_top1", "head_s"]
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
VAL_SHOTS_CAP = 4  # CoOp: val keeps min(shots, 4) images per class
def few_shot_val(samples: list[Sample], shots: int, seed: int) -> list[Sample]:
    """CoOp's val for a cell: min(shots, 4) images per class, drawn by the cell's seed."""
    by_class: dict[int, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.relpath):
        by_class.setdefault(sample.label, []).append(sample)
    chosen = []
    for label, members in sorted(by_class.items()):
        random.Random(f"val:{seed}:{label}").shuffle(members)
        chosen += members[: min(shots, VAL_SHOTS_CAP)]
    return chosen


def write_split(path: Path, splits: dict[str, list[Row]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({k: [list(r) for r in v] for k, v in splits.items()}) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def read_results(path: Path) -> list[dict]:
    """Complete rows of an earlier run; a row cut short by a kill is dropped (and rewritten away)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # the line being written when the run stopped
    rows = [row for row in csv.DictReader(lines) if all(row.get(f) not in (None, "") for f in FIELDS)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, path)
    return rows


def append_result(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def cell_key(row: dict) -> tuple:
    return row["dataset"], row["backbone"], row["pretrained"], row["method"], int(row["shots"]), int(row["seed"])


def run_dataset(dataset: CoOpDataset, args: argparse.Namespace, done: set, results_path: Path,
                backbone: Callable[[], Backbone]) -> int:
    """Every missing cell of one dataset; returns how many were run."""
    split = write_split(args.out / "work" / dataset.name / "split.json", dataset.read(args.root))
    return run_cells(dataset.name, lambda: FewShotCells(backbone(), read_split_file(args.root / dataset.folder, split),
                                                        [dataset.template], args.out / "cache" / dataset.name),
                     args, done, results_path, coop_val=True)


def run_task(task: str, args: argparse.Namespace, done: set, results_path: Path,
             backbone: Callable[[], Backbone]) -> int:
    """Every missing cell of one generated task (written once under ``--out``), split as ``clipedge train`` does."""
    folder = args.out / "data" / task
    if not folder.is_dir():
        write_task(task, folder, images_per_class=args.images_per_class, seed=args.task_seed)
    return run_cells(task, lambda: FewShotCells(backbone(), load_labelled_images(folder), resolve_templates("single"),
                                                args.out / "cache" / task),
                     args, done, results_path, coop_val=False)


def run_cells(name: str, runner_for: Callable[[], FewShotCells], args: argparse.Namespace, done: set,
              results_path: Path, coop_val: bool) -> int:
    cells = [(k, s, m) for s in args.seeds for k in args.shots for m in args.methods
             if (name, args.backbone, args.pretrained, m, k, s) not in done]
    if not cells:
        return 0
    runner = runner_for()
    for shots, seed, method in tqdm(cells, desc=name, unit="cell", disable=args.quiet):
        val = few_shot_val(runner.data.splits["val"], shots, seed) if coop_val else None
        scores = runner.run(method, shots, seed, val=val)
        append_result(results_path, {
            "dataset": name, "backbone": args.backbone, "pretrained": args.pretrained, "method": method,
            "shots": shots, "seed": seed, "val_top1": f"{scores['val_top1']:.6f}",
            "test_top1": f"{scores['test_top1']:.6f}", "head_s": f"{scores['head_s']:.3f}",
        })
    return len(cells)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="CoOp's DATASET.ROOT: one folder per dataset")
    parser.add_argument("--tasks", default="", help=f"generated tasks instead of --root, of: {', '.join(TASKS)}")
    parser.add_argument("--images-per-class", type=int, default=100, help="of a generated task (clipedge demo's)")
    parser.add_argument("--task-seed", type=int, default=1, help="seed of a generated task's images")
    parser.add_argument("--logit-scale", type=float, help="replace the model's logit scale (e.g. 100, the literal "
                                                           "of the official Tip-Adapter and GDA code)")
    parser.add_argument("--out", type=Path, default=Path("fewshot-results"))
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of: {', '.join(DATASETS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--backbone", default="RN50")
    parser.add_argument("--pretrained", default="openai")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown_tasks = [t for t in args.tasks if t not in TASKS]
    if unknown_tasks:
        raise ClipedgeError(f"--tasks {unknown_tasks[0]}: unknown task; expected some of {', '.join(TASKS)}")
    args.datasets = [] if args.tasks else [dataset_named(name.strip()) for name in args.datasets.split(",") if name.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ClipedgeError(f"--methods {unknown[0]}: unknown method; expected some of {', '.join(METHODS)}")
    try:
        args.shots = [int(k) for k in args.shots.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ClipedgeError("--shots/--seeds: expected comma-separated integers, e.g. 1,2,4,8,16") from None
    if not args.tasks and (args.root is None or not args.root.is_dir()):
        raise ClipedgeError(f"--root {args.root}: no such folder (or give --tasks)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / RESULTS_CSV
    rows = read_results(results_path)
    done = {cell_key(row) for row in rows}
    if done:
        print(f"resuming: {len(done)} cell(s) already in {results_path}", flush=True)
    loaded: list[Backbone] = []

    def backbone() -> Backbone:  # loaded on the first dataset that has work to do, then shared
        if not loaded:
            loaded.append(load_backbone(args.backbone, args.pretrained, device=resolve_device(args.device)))
            if args.logit_scale:
                with torch.no_grad():
                    loaded[0].model.logit_scale.fill_(math.log(args.logit_scale))
        return loaded[0]

    ran, skipped = 0, []
    for task in args.tasks:
        ran += run_task(task, args, done, results_path, backbone)
    for dataset in args.datasets:
        try:
            ran += run_dataset(dataset, args, done, results_path, backbone)
        except ClipedgeError as error:
            skipped.append(dataset.name)
            print(f"skipped {dataset.name}: {error}", file=sys.stderr, flush=True)
    summary = summarise(read_results(results_path), args.backbone, args.pretrained, args.methods)
    wanted = {d.name for d in args.datasets} | set(args.tasks)
    summary = {name: by_method for name, by_method in summary.items() if name in wanted}
    (args.out / RESULTS_MD).write_text(markdown(summary, args.backbone, args.pretrained, args.shots) + "\n", encoding="utf-8")
    for name, by_method in summary.items():
        plot(name, by_method, args.backbone, args.pretrained, args.shots, args.out / f"{name}.png")
    print(f"{ran} cell(s) run, {len(skipped)} dataset(s) skipped ({', '.join(skipped) or 'none'}); "
          f"table: {args.out / RESULTS_MD}, cells: {results_path}", flush=True)
    if not summary:
        print(f"Error: no dataset under {args.root} could be read", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except ClipedgeError as error:
        print(f"Error: {error}", file=sys.stderr)
        status = 2
    sys.exit(status)
