"""benchmarks/fewshot.py, the papers' protocol runner, on a small generated dataset in CoOp's layout."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipedge.backbone import SHIPPED_WEIGHTS, WEIGHTS_DIR
from clipedge.heads import METHODS
from clipedge.synthetic import render_task

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = WEIGHTS_DIR / SHIPPED_WEIGHTS["clipedge-tiny"][1]
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason="clipedge-tiny weights are not in this checkout")


def write_coop_food101(root: Path, classes: int = 3, per_class: int = 8) -> Path:
    """``root/food-101/images/<class>/*.png`` + ``split_zhou_Food101.json`` (4 train, 2 val, 2 test per class),
    class names with ``_`` as in CoOp's split files."""
    names, images, labels = render_task("colours", per_class, seed=0)
    dataset = root / "food-101"
    split = {"train": [], "val": [], "test": []}
    for index, (image, label) in enumerate(zip(images, labels)):
        if label >= classes:
            continue
        name = f"{names[label].replace(' ', '_')}_dish"
        relpath = f"{name}/{index:04d}.png"
        (dataset / "images" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(dataset / "images" / relpath)
        position = index % per_class
        split["train" if position < 4 else "val" if position < 6 else "test"].append([relpath, int(label), name])
    (dataset / "split_zhou_Food101.json").write_text(json.dumps(split))
    return root


def run_fewshot(root: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "benchmarks" / "fewshot.py"), "--root", str(root), "--out", str(out),
               "--datasets", "Food101,EuroSAT", "--shots", "1,4", "--seeds", "1,2",
               "--backbone", "clipedge-tiny", "--pretrained", "clipedge", "--device", "cpu", "--threads", "1", "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def cells(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@needs_weights
def test_fewshot_runner_writes_the_table_skips_a_missing_dataset_and_resumes(tmp_path):
    root, out = write_coop_food101(tmp_path / "data"), tmp_path / "results"
    first = run_fewshot(root, out)
    assert first.returncode == 0, first.stderr
    assert "skipped EuroSAT" in first.stderr and "eurosat/split_zhou_EuroSAT.json not found" in first.stderr
    rows = cells(out / "results.csv")
    assert {(r["method"], r["shots"], r["seed"]) for r in rows} == {(m, k, s) for m in METHODS for k in "14" for s in "12"}
    assert all(r["dataset"] == "Food101" and 0 <= float(r["test_top1"]) <= 1 for r in rows)
    table = (out / "results.md").read_text()
    assert "## Food101: test top-1" in table and "## Food101: val top-1" in table
    assert all(f"| {method} |" in table for method in METHODS) and "(n=2)" in table
    assert (out / "Food101.png").stat().st_size > 0

    # A run killed mid-way: the last three cells are gone and the line being written was cut short.
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]) + lines[-3][:12])
    second = run_fewshot(root, out)
    assert second.returncode == 0, second.stderr
    assert f"resuming: {len(rows) - 3} cell(s) already in" in second.stdout
    assert "3 cell(s) run" in second.stdout
    resumed = cells(out / "results.csv")
    assert resumed[: len(rows) - 3] == rows[: len(rows) - 3]  # finished cells are kept, not re-run
    assert sorted((r["method"], r["shots"], r["seed"]) for r in resumed) == sorted((r["method"], r["shots"], r["seed"]) for r in rows)


def test_fewshot_runner_refuses_a_root_with_no_dataset(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fewshot.py"), "--root", str(tmp_path),
                             "--out", str(tmp_path / "out"), "--datasets", "DTD", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "skipped DescribableTextures" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error: no dataset")


@needs_weights
def test_fewshot_runner_on_a_generated_task_marks_each_rows_protocol_and_adds_auto(tmp_path):
    methods = ("zero-shot", "gda", "tip-adapter")
    command = [sys.executable, str(REPO / "benchmarks" / "fewshot.py"), "--tasks", "colours", "--out", str(tmp_path),
               "--images-per-class", "6", "--shots", "1", "--seeds", "1,2", "--methods", ",".join(methods),
               "--backbone", "clipedge-tiny", "--pretrained", "clipedge", "--device", "cpu", "--threads", "1", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = cells(tmp_path / "results.csv")
    assert {(r["dataset"], r["method"], r["seed"]) for r in rows} == {("colours", m, s) for m in methods for s in "12"}
    table = (tmp_path / "results.md").read_text()
    assert "| method | chosen on val | 1-shot | head s |" in table
    assert "| zero-shot | nothing |" in table and "| gda | α |" in table and "| tip-adapter | α, β |" in table
    assert "| auto | the best val top-1 of the rows above |" in table
    by_seed = {}
    for row in rows:
        by_seed.setdefault(row["seed"], {})[row["method"]] = row
    from clipedge.heads.selection import best_method

    chosen = [float(r[best_method({m: float(r[m]["val_top1"]) for m in methods})]["test_top1"]) for r in by_seed.values()]
    auto_line = next(line for line in table.splitlines() if line.startswith("| auto |"))
    assert f"{100 * sum(chosen) / 2:.1f} ±" in auto_line
