"""Test decides nothing, black-box: swap every test image after training and every choice stays the same.

Also here: the open-set check of a text-branch CLIP-Adapter starts from the text encoder's W, and the
first run trains and measures on the features the cache stores (what ``eval`` reads later).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder

import clipedge
from clipedge.backbone import SHIPPED_WEIGHTS, WEIGHTS_DIR, load_backbone
from clipedge.calibration.calibrate import calibrate, text_weights_before_training
from clipedge.cli.demo import choose_best_method, compare_methods
from clipedge.data import load_labelled_images
from clipedge.feature_cache import FeatureCache, cached_features
from clipedge.run_dir import load_run
from clipedge.run_features import RunFeatures, run_data

SIX_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
               "yellow": (220, 220, 30), "purple": (150, 30, 150), "grey": (128, 128, 128)}
TINY = dict(backbone="test-tiny-vit", pretrained="none", views=2, progress=False)
#: what `calibrate` reports about the test split without using it
TEST_REPORT_FIELDS = ("test_auroc_report", "diagram")


def replace_test_images(data: Path, test_relpaths: list[str], train_relpaths: list[str]) -> None:
    """Overwrite every test image with a training image of another class: same names, different pictures."""
    def class_of(relpath: str) -> str:
        return relpath.split("/")[0]

    for relpath in test_relpaths:
        donor = next(t for t in train_relpaths if class_of(t) != class_of(relpath))
        shutil.copyfile(data / donor, data / relpath)
        train_relpaths.append(train_relpaths.pop(train_relpaths.index(donor)))  # vary the donors


def choices(report) -> dict:
    return {k: v for k, v in asdict(report).items() if k not in TEST_REPORT_FIELDS}


@pytest.mark.parametrize("method, branch", [("tip-adapter", "visual"), ("clip-adapter", "both")])
def test_calibration_choices_ignore_the_test_images(tmp_path, method, branch):
    data = write_image_folder(tmp_path / "data", per_class=15, classes=SIX_COLOURS)
    run = tmp_path / "run"
    trained = {"branch": branch, "epochs": 20} if method == "clip-adapter" else {}  # Tip-Adapter takes neither
    clipedge.train(data, run, method=method, shots=6, **trained, **TINY)
    before = calibrate(run, progress=False)
    test_before = RunFeatures(load_run(run), progress=False).split("test").features

    split = json.loads((run / "split.json").read_text())
    replace_test_images(data, [r[0] for r in split["test"]], [r[0] for r in split["train"]])
    after = calibrate(run, progress=False)

    assert not torch.equal(RunFeatures(load_run(run), progress=False).split("test").features, test_before)
    assert after.test_auroc_report != before.test_auroc_report  # the new test images were read and reported
    assert choices(after) == choices(before)  # score, threshold, temperature, val AUROC: bit for bit
    assert set(before.auroc) == set(before.test_auroc_report) == {"max_prob", "energy"}
    assert before.open_set["known_val_images"] > 0 and before.open_set["unknown_val_images"] > 0


def test_text_branch_check_starts_from_the_text_encoders_w(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=10, classes=SIX_COLOURS)
    clipedge.train(data, tmp_path / "zs", method="zero-shot", shots=4, **{k: v for k, v in TINY.items() if k != "views"})
    clipedge.train(data, tmp_path / "ca", method="clip-adapter", branch="text", shots=4, epochs=20, **TINY)
    adapted = load_run(tmp_path / "ca")
    original = load_run(tmp_path / "zs").head.text_weights  # a zero-shot head keeps the text encoder's W
    assert not torch.allclose(adapted.head.text_weights, original, atol=1e-3)  # the run's W was adapted on all classes
    restored = text_weights_before_training(adapted, RunFeatures(adapted, progress=False))
    torch.testing.assert_close(restored, original, rtol=0, atol=1e-6)


def test_first_run_sees_what_the_cache_stores(tmp_path, image_folder):
    backbone = load_backbone("test-tiny-vit", "none")
    samples = load_labelled_images(image_folder).splits["test"]
    cache = FeatureCache(tmp_path / "cache")

    def features():
        return cached_features(backbone.spec, lambda: backbone, cache, "test", samples, 0, 0, False).features

    encoded, reread = features(), features()
    assert torch.equal(encoded, reread)  # the encoding call returns the fp16 values it stored, not fresh fp32
    assert torch.equal(encoded, encoded.half().float())


def test_manifest_test_top1_equals_clipedge_eval(tmp_path, image_folder):
    run = tmp_path / "run"
    result = clipedge.train(image_folder, run, method="clip-adapter", shots=4, epochs=30, **TINY)
    report = clipedge.evaluate(run, progress=False)
    assert report.top1 == result.metrics["test_top1"] == load_run(run).manifest["metrics"]["test_top1"]


WEIGHTS = WEIGHTS_DIR / SHIPPED_WEIGHTS["clipedge-tiny"][1]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="clipedge-tiny weights are not in this checkout")
def test_demo_choice_ignores_the_test_images(tmp_path):
    from clipedge.synthetic import write_task

    data = write_task("colours-tinted", tmp_path / "task", images_per_class=12, seed=2)
    shots, draws = (2,), [1]

    def compare():
        comparison = compare_methods(data, tmp_path / "runs", tmp_path / "cache", shots, draws, device="cpu")
        return comparison, choose_best_method(comparison.per_seed_val, shots[-1])

    before, chosen = compare()
    splits = run_data(load_run(before.runs[("zero-shot", shots[0])])).splits
    replace_test_images(data, [s.relpath for s in splits["test"]], [s.relpath for s in splits["train"]])
    after, chosen_again = compare()

    assert after.per_seed != before.per_seed  # the test figures did change
    assert after.per_seed_val == before.per_seed_val and chosen_again == chosen
    assert after.runs == before.runs


def test_auto_choice_ignores_the_test_images(tmp_path, monkeypatch):
    import clipedge.heads.selection as selection

    # the quick candidates, one of each kind of fit (the slow ones see exactly the same FewShotProblem: train and val)
    monkeypatch.setattr(selection, "CANDIDATES", ("zero-shot", "gda", "linear-probe", "tip-adapter"))
    data = write_image_folder(tmp_path / "data", per_class=12, classes=SIX_COLOURS)
    cache = tmp_path / "cache"  # shared by both runs: train and val features are the same; test is re-read
    first = clipedge.train(data, tmp_path / "before", method="auto", shots=4, cache_dir=cache, **TINY)
    split = json.loads((tmp_path / "before" / "split.json").read_text())
    test_before = RunFeatures(load_run(tmp_path / "before"), progress=False).split("test").features
    replace_test_images(data, [r[0] for r in split["test"]], [r[0] for r in split["train"]])
    second = clipedge.train(data, tmp_path / "after", method="auto", shots=4, cache_dir=cache, **TINY)

    assert not torch.equal(RunFeatures(load_run(tmp_path / "after"), progress=False).split("test").features, test_before)
    val_figures = [[(c["method"], c["val_top1"], c["error"]) for c in result.candidates] for result in (first, second)]
    assert val_figures[0] == val_figures[1] and second.method == first.method
    assert second.metrics["val_top1"] == first.metrics["val_top1"]
    before, after = (load_run(tmp_path / name).manifest for name in ("before", "after"))
    assert after["auto"]["chosen"] == before["auto"]["chosen"] == first.method
    assert after["head"]["hparams"] == before["head"]["hparams"]
