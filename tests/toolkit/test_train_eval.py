"""End to end: ``clipedge train`` then ``clipedge eval`` on generated images, through the CLI."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import clipedge
from clipedge import features as features_module
from clipedge.cli import main
from clipedge.data import Sample
from clipedge.heads import METHODS
from clipedge.run_dir import FORMAT_VERSION, load_run

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--shots", "4"]
#: the quick settings each method takes (every other option is refused for it)
QUICK = {"zero-shot": [], "linear-probe": [], "clip-adapter": ["--epochs", "3", "--views", "2"],
         "tip-adapter": ["--views", "2"], "tip-adapter-f": ["--epochs", "3", "--views", "2"],
         "zs-lp": ["--epochs", "3", "--views", "2"], "clap": ["--epochs", "3", "--views", "2"], "gda": ["--views", "2"],
         "lp++": ["--epochs", "3", "--views", "2"]}


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("method", METHODS)
def test_train_then_eval_every_method(image_folder, tmp_path, method):
    run = tmp_path / "run"
    result = invoke("train", image_folder, "--out", run, "--method", method, *QUICK[method], *TINY)
    assert result.exit_code == 0, result.output
    assert "zero-shot test top-1" in result.output and method in result.output
    assert {p.name for p in run.iterdir()} >= {"clipedge.json", "head.safetensors", "cache", "split.json"}
    assert not list(tmp_path.glob(".run.*"))  # the staging folder was renamed away

    result = invoke("eval", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads((run / "clipedge.json").read_text())
    assert report["top1"] == pytest.approx(manifest["metrics"]["test_top1"])
    assert report["num_images"] == manifest["data"]["counts"]["test"] == len(report["predictions"])
    assert sum(c["count"] for c in report["per_class"]) == report["num_images"]
    assert (run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = invoke("eval", run)
    assert table.exit_code == 0 and "top-1" in table.output and "red" in table.output


def test_manifest_round_trips(image_folder, tmp_path):
    run = tmp_path / "run"
    clipedge.train(image_folder, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=3, views=2, progress=False)
    loaded = load_run(run)
    manifest = loaded.manifest
    assert manifest["format_version"] == FORMAT_VERSION
    assert loaded.class_names == ["blue", "green", "red"]
    assert manifest["head"]["hparams"] == loaded.head.hparams()
    assert manifest["backbone"]["model_config"]["vision_cfg"]["width"] == 64
    assert manifest["backbone"]["image_size"] == 32 and len(manifest["backbone"]["mean"]) == 3
    assert manifest["data"]["shots"] == 3 and manifest["seed"] == 1
    tensors = load_file(str(run / "head.safetensors"))
    torch.testing.assert_close(tensors["keys"], loaded.head.keys.detach())
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 9 and all(len(row) == 3 for row in split["test"])


def test_second_run_reuses_the_cache(image_folder, tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    options = dict(backbone="test-tiny-vit", pretrained="none", shots=2, method="zero-shot", progress=False)
    clipedge.train(image_folder, run, **options)
    calls = []
    original = features_module.extract_features
    monkeypatch.setattr("clipedge.feature_cache.extract_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    with caplog.at_level(logging.DEBUG, logger="clipedge"):
        second = clipedge.train(image_folder, run, overwrite=True, **options)
    assert calls == []
    assert caplog.text.count("reusing cached") == 3
    first_metrics = json.loads((run / "clipedge.json").read_text())["metrics"]
    assert second.metrics == first_metrics
    clipedge.train(image_folder, run, overwrite=True, **{**options, "shots": 3})
    assert len(calls) == 1  # only the new train sample is encoded again


def test_eval_on_another_folder(image_folder, tmp_path):
    from conftest import write_image_folder

    run = tmp_path / "run"
    clipedge.train(image_folder, run, method="linear-probe", backbone="test-tiny-vit", pretrained="none", shots=4, progress=False)
    other = write_image_folder(tmp_path / "other", per_class=4, seed=7)
    report = clipedge.evaluate(run, other, progress=False)
    assert report.num_images == 12 and report.split == "all"
    loaded = load_run(run)
    assert [p["label"] for p in report.predictions] == [loaded.class_names.index(p["path"].split("/")[0])
                                                        for p in report.predictions]
    backbone = clipedge.load_backbone("test-tiny-vit", "none")  # the other folder's images, encoded apart from eval
    samples = [Sample((other / p["path"]).resolve(), p["path"], p["label"]) for p in report.predictions]
    with torch.no_grad():
        features = features_module.extract_features(backbone, samples, views=0, seed=0, progress=False).features
        predicted = loaded.head(features.half().float()).argmax(dim=1).tolist()  # as the cache stores them
    assert [p["predicted"] for p in report.predictions] == predicted
    assert report.top1 == pytest.approx(sum(p["label"] == p["predicted"] for p in report.predictions) / 12)


def test_resnet_backbone(image_folder, tmp_path):
    run = tmp_path / "rn"
    result = clipedge.train(image_folder, run, method="clip-adapter", backbone="test-tiny-rn", pretrained="none", shots=2, views=2, epochs=2, progress=False)
    assert result.metrics["test_top1"] is not None
    assert clipedge.evaluate(run, progress=False).top1 == pytest.approx(result.metrics["test_top1"])


def test_real_architecture_vit_b_32(tmp_path):
    """A real open_clip architecture end to end (random weights: no download is possible here)."""
    from conftest import write_image_folder

    data = write_image_folder(tmp_path / "data", per_class=5)
    run = tmp_path / "run"
    result = invoke("train", data, "--out", run, "--backbone", "ViT-B-32", "--pretrained", "none",
                    "--shots", "2", "--views", "1", "--method", "tip-adapter")
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "clipedge.json").read_text())
    assert manifest["backbone"]["embed_dim"] == 512 and manifest["backbone"]["image_size"] == 224
    report = json.loads(invoke("eval", run, "--json").stdout)
    assert report["top1"] == pytest.approx(manifest["metrics"]["test_top1"])
