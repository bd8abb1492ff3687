"""Rejection only when it works: below the minimum held-out AUROC, calibrate records the threshold, applies none,
says so in one line, and the export carries none; --force-threshold applies it anyway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.calibration.rejection_policy import MIN_AUROC, withheld_reason
from clipedge.cli import main
from clipedge.export import export_model
from clipedge.export.deepstream import threshold_for
from clipedge.runtime import Classifier
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata

SIX_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
               "yellow": (220, 220, 30), "purple": (150, 30, 150), "grey": (128, 128, 128)}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rejection")
    data = write_image_folder(root / "data", per_class=15, classes=SIX_COLOURS)
    run = root / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=6, views=2,
                   progress=False)
    return run


def calibrate_cli(run: Path, *args: str) -> tuple[str, dict]:
    result = CliRunner().invoke(main, ["calibrate", str(run), *args])
    assert result.exit_code == 0, result.output
    return result.stdout, json.loads((run / "clipedge.json").read_text())["calibration"]


def test_withheld_below_the_minimum_only():
    assert MIN_AUROC == 0.6
    assert withheld_reason("energy", 0.6, MIN_AUROC) is None and withheld_reason("energy", 0.93, MIN_AUROC) is None
    reason = withheld_reason("max_prob", 0.48, MIN_AUROC)
    assert reason and "0.48 (max_prob)" in reason and "minimum 0.6" in reason and "\n" not in reason


def test_a_threshold_below_the_minimum_is_recorded_not_applied_and_not_exported(trained_run, tmp_path):
    _, applied = calibrate_cli(trained_run, "--min-auroc", "0")
    held_out = applied["auroc"][applied["rejection_score"]]
    assert held_out < 1, "the random-weight test backbone separates held-out classes imperfectly"
    assert applied["threshold"] == applied["candidate_threshold"] and applied["threshold_withheld"] is None
    assert not applied["threshold_forced"]

    stdout, withheld = calibrate_cli(trained_run, "--min-auroc", "1")  # every AUROC short of perfect is below it
    assert withheld["threshold"] is None and withheld["candidate_threshold"] == applied["candidate_threshold"]
    assert withheld["min_auroc"] == 1 and f"held-out val AUROC {held_out:.2f}" in withheld["threshold_withheld"]
    notice = [line for line in stdout.splitlines() if "no rejection threshold applied" in line]
    assert len(notice) == 1 and "--force-threshold" in notice[0] and withheld["threshold_withheld"] in notice[0]
    model = export_model(trained_run, tmp_path / "withheld.onnx", parity_count=8, progress=False).artifact
    metadata = read_onnx_metadata(model)
    assert "rejection_threshold" not in metadata and "temperature" in metadata
    classifier = Classifier(model)
    assert classifier.rejection_threshold is None
    assert not any(p.rejected for p in classifier(sorted((trained_run.parent / "data").rglob("*.png"))[:12]))
    assert threshold_for(clipedge.load_run(trained_run)).value == 0.0, "DeepStream's configs carry none either"

    stdout, forced = calibrate_cli(trained_run, "--min-auroc", "1", "--force-threshold")
    assert forced["threshold"] == forced["candidate_threshold"] and forced["threshold_forced"]
    assert forced["threshold_withheld"] is None and "applied by --force-threshold" in stdout
    forced_model = export_model(trained_run, tmp_path / "forced.onnx", parity_count=8, progress=False).artifact
    assert Classifier(forced_model).rejection_threshold == pytest.approx(forced["threshold"])


def test_default_minimum_decides_and_calibrate_json_says_why(trained_run):
    result = CliRunner().invoke(main, ["calibrate", str(trained_run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    held_out = report["auroc"][report["rejection_score"]]
    assert report["schema_version"] == 2 and report["min_auroc"] == MIN_AUROC
    if held_out < MIN_AUROC:
        assert report["threshold"] is None and report["threshold_withheld"]
    else:
        assert report["threshold"] == report["candidate_threshold"] and report["threshold_withheld"] is None


def test_demo_stage_follows_the_decision(trained_run, tmp_path):
    from clipedge.cli.demo import calibrate_stage

    lines: list[str] = []
    stage = calibrate_stage(trained_run, tmp_path, lines.append)["calibration"]
    text = "".join(lines)
    if stage["threshold"] is None:
        assert "no \"unknown\" threshold" in text and stage["threshold_withheld"] in text
    else:
        assert f"below {stage['threshold']:.3g}" in text


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_min_auroc_outside_zero_one(trained_run, value):
    result = CliRunner().invoke(main, ["calibrate", str(trained_run), "--min-auroc", value])
    assert result.exit_code == 2 and f"--min-auroc {float(value)}" in result.stderr
