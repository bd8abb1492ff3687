"""The embedded default: shipped clipedge-tiny weights, the shifted task, and `clipedge demo`."""

from __future__ import annotations

import json
import logging

import numpy as np
import open_clip
import pytest
from safetensors.torch import load_file

import clipedge
from clipedge.backbone import SHIPPED_WEIGHTS, WEIGHTS_DIR, load_backbone, register_model_configs
from clipedge.heads.selection import best_method
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.synthetic import SHAPES, generate_pairs, write_task

pytestmark = pytest.mark.integration

WEIGHTS = WEIGHTS_DIR / SHIPPED_WEIGHTS["clipedge-tiny"][1]
#: a quick demo: one method of each kind of fit (the full demo trains every method in METHODS, the default)
QUICK_METHODS = ("zero-shot", "gda", "clip-adapter", "tip-adapter")
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason="clipedge-tiny weights are not in this checkout")


def test_generator_is_deterministic_and_covers_the_vocabulary():
    a, b = generate_pairs(200, seed=5), generate_pairs(200, seed=5)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, generate_pairs(200, seed=6).images)
    assert a.images.dtype == np.uint8 and a.images.shape == (200, 64, 64, 3)
    assert set(a.labels("shape")) == set(range(len(SHAPES)))
    for scene, caption in zip(a.scenes, a.captions):
        assert scene.main.shape in caption


def test_task_is_an_ordinary_image_folder(tmp_path):
    root = write_task("shapes-sketch", tmp_path / "task", images_per_class=3, seed=0)
    folders = sorted(p.name for p in root.iterdir())
    assert folders == sorted(SHAPES) and all(len(list((root / f).glob("*.png"))) == 3 for f in folders)
    again = write_task("shapes-sketch", tmp_path / "task", images_per_class=3, seed=0)  # replaces, never mixes
    assert sum(1 for _ in again.rglob("*.png")) == 30


@needs_weights
def test_shipped_weights_load_strictly_and_fit_the_budget():
    register_model_configs()
    model = open_clip.create_model("clipedge-tiny")
    state = load_file(str(WEIGHTS))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    assert WEIGHTS.stat().st_size <= 15e6
    assert load_backbone("clipedge-tiny").spec.pretrained == "clipedge"


@needs_weights
def test_adapters_beat_zero_shot_on_the_shifted_task(tmp_path):
    data = write_task("colours-tinted", tmp_path / "task", images_per_class=40, seed=3)
    common = dict(shots=16, cache_dir=tmp_path / "cache", progress=False)
    zero_shot = clipedge.train(data, tmp_path / "zs", method="zero-shot", **common).metrics["test_top1"]
    adapter = clipedge.train(data, tmp_path / "ca", method="clip-adapter", **common).metrics["test_top1"]
    assert zero_shot > 0.125 + 0.1  # well above chance (8 classes) even under the shift
    assert adapter > zero_shot + 0.05


@needs_weights
def test_demo_end_to_end(tmp_path, caplog):
    from clipedge.cli.demo import run_demo

    lines: list[str] = []
    with caplog.at_level(logging.INFO, logger="clipedge"):  # what `clipedge demo` shows without -v
        result = run_demo(tmp_path / "demo", images_per_class=40, seeds=2, echo=lines.append, progress=False,
                          methods=QUICK_METHODS)
    # without -v the CLI shows clipedge's records from INFO and other libraries' only from ERROR
    records = [r for r in caplog.records if r.name.startswith("clipedge") or r.levelno >= logging.ERROR]
    shown = "\n".join(lines).splitlines() + [r.getMessage() for r in records]
    assert len(shown) < 40, "\n".join(shown)
    assert not any("reusing cached" in line for line in shown)  # debug level: only under clipedge -v
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert list(saved["accuracy"]) == list(QUICK_METHODS)
    assert set(saved["accuracy"]["clip-adapter"]) == {"1", "4", "16"} and saved["seeds"] == [1, 2]
    per_seed = saved["accuracy_per_seed"]["clip-adapter"]["16"]
    assert len(per_seed) == 2 and saved["accuracy"]["clip-adapter"]["16"] == pytest.approx(sum(per_seed) / 2)
    assert saved["calibration"]["temperature"] > 0 and 0 < saved["calibration"]["target_frr"] < 1
    assert saved["export"]["parity"]["passed"] and saved["runtime"]["latency"]["1"]["runtime"]["p50_ms"] > 0
    metadata = read_onnx_metadata(tmp_path / "demo" / "model.onnx")
    assert float(metadata["temperature"]) == pytest.approx(saved["calibration"]["temperature"])
    if saved["calibration"]["threshold"] is None:  # the score did not separate held-out classes: none deployed
        assert saved["calibration"]["threshold_withheld"] and "rejection_threshold" not in metadata
        assert any('no "unknown" threshold' in line for line in lines)
    else:
        assert float(metadata["rejection_threshold"]) == pytest.approx(saved["calibration"]["threshold"])
    assert (tmp_path / "demo" / "accuracy_vs_shots.png").read_bytes()[:4] == b"\x89PNG"
    assert result.best_run.is_dir() and any("16-shot" in line for line in lines)
    val = saved["val_accuracy"]  # the exported run is the best by mean val top-1, never by test
    best = best_method({m: val[m]["16"] for m in val})  # the rule of --method auto
    assert result.best_run.name == f"{best}-16shot-seed1"
