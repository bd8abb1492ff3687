"""`clipedge predict` and `clipedge bench` on small contract models: tables, JSON, errors, batch parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.runtime.bench.local import measure, measure_alternating, parse_batches


def test_predict_command(model, frames_folder, tmp_path):
    runner = CliRunner()
    table = runner.invoke(main, ["predict", str(model), str(frames_folder), "--batch-size", "2"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["image", "label", "score"] and len(lines) == 2 + 4
    assert "skipped 2 file(s) that are not readable images: " in table.stderr
    assert "notes.txt" in table.stderr and "broken.png" in table.stderr

    as_json = json.loads(runner.invoke(main, ["predict", str(model), str(frames_folder), "--json", "--top-k", "2"]).stdout)
    labels = {Path(p["path"]).name: p["label"] for p in as_json["predictions"]}
    assert labels == {"0_red.png": "red", "1_green.png": "green", "2_blue.png": "blue", "g.jpg": "green"}
    assert as_json["skipped"] == 2 and len(as_json["predictions"][0]["labels"]) == 2
    assert as_json["backend"] == "onnxruntime:CPUExecutionProvider"

    as_csv = runner.invoke(main, ["predict", str(model), str(frames_folder / "0_red.png"), "--csv", "--top-k", "2"]).stdout
    header, row = as_csv.splitlines()
    assert header == "path,label,score,label_2,score_2" and row.split(",")[1] == "red"


def test_predict_command_errors(model, frames_folder, tmp_path):
    runner = CliRunner()
    for args, message in (
        ([str(tmp_path / "none.onnx"), str(frames_folder)], "no such file"),
        ([str(model), str(tmp_path / "nowhere")], "IMAGES"),
        ([str(model), str(frames_folder / "notes.txt")], "no readable images"),
        ([str(model), str(frames_folder), "--json", "--csv"], "choose one output format"),
    ):
        result = runner.invoke(main, ["predict", *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
        assert "Traceback" not in result.output


def test_bench_command_json(model):
    result = CliRunner().invoke(main, ["bench", str(model), "--batch", "1,4", "--iters", "5", "--warmup", "1",
                                       "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [entry["batch"] for entry in report["results"]] == [1, 4] and report["threads"] == 1
    for entry in report["results"]:
        assert {"p50_ms", "p99_ms", "images_per_s"} <= set(entry["runtime"]) and "torch" not in entry
        assert entry["runtime"]["p50_ms"] <= entry["runtime"]["p99_ms"]
    table = CliRunner().invoke(main, ["bench", str(model), "--batch", "2", "--iters", "3", "--warmup", "0"])
    assert table.exit_code == 0 and "images/s" in table.stdout
    bad = CliRunner().invoke(main, ["bench", str(model), "--batch", "x"])
    assert bad.exit_code == 2 and "--batch x: expected comma-separated whole numbers" in bad.stderr


def test_measure_and_batches():
    frames = np.zeros((4, 2, 2, 3), np.uint8)
    m = measure(lambda f: f.sum(), frames, iterations=7, warmup=2)
    assert m.batch == 4 and m.iterations == 7 and 0 < m.p50_ms <= m.p90_ms <= m.p99_ms and m.images_per_s > 0
    both = measure_alternating({"fast": lambda f: None, "slow": lambda f: sum(range(20000))}, frames, 7, 1, rounds=3)
    assert [m.iterations for m in both.values()] == [7, 7] and both["fast"].p50_ms < both["slow"].p50_ms
    assert parse_batches("1, 8,32") == [1, 8, 32]
    with pytest.raises(ClipedgeError, match="at least 1"):
        parse_batches("0,2")
