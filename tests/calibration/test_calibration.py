"""Temperature scaling, ECE, the rejection threshold and AUROC; ``clipedge calibrate`` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.calibration.rejection import auroc, confidence_score, false_reject_rate, threshold_for_frr
from clipedge.calibration.temperature import expected_calibration_error, fit_temperature, nll
from clipedge.cli import main


def miscalibrated_logits(true_temperature: float, n: int = 20000, classes: int = 10, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z · T, i.e. it is off by a known temperature."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=generator, dtype=torch.float64) * 2.0
    labels = torch.multinomial(z.softmax(dim=1), 1, generator=generator).squeeze(1)
    return z * true_temperature, labels


@pytest.mark.parametrize("true_temperature", [0.4, 2.5])
def test_temperature_is_recovered_within_5_percent(true_temperature):
    logits, labels = miscalibrated_logits(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_ece_and_nll_fall_after_calibration():
    logits, labels = miscalibrated_logits(3.0)
    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(logits.softmax(dim=1), labels)
    after = expected_calibration_error((logits / temperature).softmax(dim=1), labels)
    assert after < before / 3
    assert nll(logits, labels, temperature) < nll(logits, labels)


def test_threshold_meets_the_requested_false_reject_rate():
    scores = torch.rand(1000, generator=torch.Generator().manual_seed(1))
    for target in (0.01, 0.05, 0.2):
        threshold = threshold_for_frr(scores, target)
        frr = false_reject_rate(scores, threshold)
        assert target - 0.002 <= frr <= target


def test_auroc_against_brute_force():
    generator = torch.Generator().manual_seed(2)
    known, unknown = torch.randn(60, generator=generator) + 1, torch.randn(40, generator=generator)
    unknown[:5] = known[:5]  # ties count half
    pairs = (known[:, None] > unknown[None, :]).double() + 0.5 * (known[:, None] == unknown[None, :]).double()
    assert auroc(known, unknown) == pytest.approx(pairs.mean().item())
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0


def test_scores_are_higher_for_confident_logits():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    for kind in ("max_prob", "energy"):
        score = confidence_score(logits, kind)
        assert score[0] > score[1]


SIX_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
               "yellow": (220, 220, 30), "purple": (150, 30, 150), "grey": (128, 128, 128)}


@pytest.fixture
def trained_run(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=15, classes=SIX_COLOURS)
    run = tmp_path / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=6, views=2, progress=False)
    return run


def test_calibrate_end_to_end(trained_run):
    result = CliRunner().invoke(main, ["calibrate", str(trained_run), "--target-frr", "0.1"])
    assert result.exit_code == 0, result.output
    assert "temperature" in result.stdout and "AUROC" in result.stdout
    calibration = json.loads((trained_run / "clipedge.json").read_text())["calibration"]
    assert calibration["temperature"] > 0 and calibration["target_frr"] == 0.1
    assert calibration["val_frr"] <= 0.1
    assert calibration["rejection_score"] in ("max_prob", "energy")
    assert calibration["open_set"]["known_classes"] == 3 and calibration["open_set"]["unknown_classes"] == 3
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-9
    assert (trained_run / "reliability_diagram.png").read_bytes()[:4] == b"\x89PNG"
    assert clipedge.load_run(trained_run).manifest["calibration"] == calibration


@pytest.mark.parametrize("frr", ["0", "1", "1.5", "-0.1"])
def test_target_frr_outside_zero_one(trained_run, frr):
    result = CliRunner().invoke(main, ["calibrate", str(trained_run), "--target-frr", frr])
    assert result.exit_code == 2 and f"--target-frr {float(frr)}" in result.stderr


def test_run_without_val_says_how_to_make_one(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=2)  # 2 images per class: nothing is held out
    run = tmp_path / "run"
    clipedge.train(data, run, method="zero-shot", backbone="test-tiny-vit", pretrained="none", shots=2, progress=False)
    result = CliRunner().invoke(main, ["calibrate", str(run)])
    assert result.exit_code == 2 and "'val' list" in result.stderr
