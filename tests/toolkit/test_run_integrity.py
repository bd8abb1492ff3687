"""A run directory is verified, not trusted: one hand-made corruption per test, each either one line and exit 2
or a recomputed cache; never a traceback, never a silent wrong answer."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder
from safetensors.torch import load_file, save_file

import clipedge
from clipedge.cli import main
from clipedge.feature_cache import FeatureCache
from clipedge.features import FeatureSet

TRAIN = dict(backbone="test-tiny-vit", pretrained="none", shots=2, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A clip-adapter run on three classes and a zero-shot run on two, trained once; tests corrupt copies."""
    root = tmp_path_factory.mktemp("integrity")
    three = write_image_folder(root / "three", per_class=6)
    two = write_image_folder(root / "two", per_class=6, classes={"cyan": (0, 200, 200), "pink": (250, 120, 200)})
    clipedge.train(three, root / "run", method="clip-adapter", views=1, epochs=1, **TRAIN)
    clipedge.train(two, root / "two-classes", method="zero-shot", **TRAIN)
    return {"run": root / "run", "two-classes": root / "two-classes"}


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    return copy


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(*args: object) -> str:
    """The command exits 2 with exactly one ``Error:`` line and no traceback; returns that line."""
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def edit_manifest(run: Path, edit) -> None:
    manifest = json.loads((run / "clipedge.json").read_text())
    edit(manifest)
    (run / "clipedge.json").write_text(json.dumps(manifest))


def eval_json(run: Path) -> tuple[dict, str]:
    result = invoke("eval", run, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout), result.stderr


def cache_file(run: Path, split: str) -> Path:
    (found,) = (run / "cache").glob(f"{split}-*.safetensors")
    return found


@pytest.mark.parametrize("where", ["labels", "features"])
def test_bit_flipped_cache_file_is_recomputed(trained, run, where):
    clean, _ = eval_json(trained["run"])
    path = cache_file(run, "test")
    data = bytearray(path.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8 : 8 + header_size])[where]["data_offsets"]
    data[8 + header_size + start + 3] ^= 0x40  # a label of 2**30 (once an IndexError deep in torch) / a feature changed
    path.write_bytes(bytes(data))
    report, notices = eval_json(run)
    assert f"feature cache {path} does not verify (its checksum does not match its contents); recomputing it" in notices
    assert report["top1"] == clean["top1"] and report["per_class"] == clean["per_class"]
    assert FeatureCache(path.parent).load("test", path.stem.split("-", 1)[1]) is not None, "rewritten, and verifies"


def test_cache_file_of_the_wrong_shape_is_recomputed(trained, run):
    clean, _ = eval_json(trained["run"])
    path = cache_file(run, "test")
    split, key = path.stem.split("-", 1)
    stored = FeatureCache(run / "cache").load(split, key)
    # a well-formed file with a valid checksum, but not these images' features: 16 dimensions for a 32-d backbone
    FeatureCache(run / "cache").save(split, key, FeatureSet(stored.features[:, :16], stored.labels, stored.relpaths))
    report, notices = eval_json(run)
    assert f"feature cache {path} does not verify (features of shape [6, 16] where 6 images need [6, 32])" in notices
    assert report["top1"] == clean["top1"]


def test_cache_file_without_checksum_is_recomputed(run):
    """What an older clipedge wrote: recomputed once, then verified."""
    path = cache_file(run, "test")
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"relpaths": "[]", "skipped": "[]"})
    assert "it carries no checksum" in eval_json(run)[1]
    assert "does not verify" not in eval_json(run)[1]


@pytest.mark.parametrize("command", ["eval", "export"])
@pytest.mark.parametrize("entry, value, expected", [
    (("backbone", "image_size"), "64", "manifest entry backbone.image_size does not match the manifest schema: '64' is not of type 'integer'"),
    (("class_names",), "red green blue", "manifest entry class_names does not match the manifest schema"),
    (("training", "views"), 1.0, "manifest entry training.views does not match the manifest schema: 1.0 is not of type"),
    (("head", "hparams", "alpha"), "high", "manifest entry head.hparams.alpha does not match the manifest schema"),
    (("seed",), None, "manifest entry seed does not match the manifest schema: None is not of type 'integer'"),
])
def test_manifest_value_of_the_wrong_type_is_one_line(run, command, entry, value, expected):
    def edit(manifest):
        *parents, last = entry
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value

    edit_manifest(run, edit)
    line = refused(command, run)
    assert f"RUN {run / 'clipedge.json'}: {expected}" in line, line
    assert not (run / "export").exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_head_with_another_class_count_is_refused_and_the_model_is_kept(trained, run, command):
    (run / "export").mkdir()
    good = run / "export" / "model.onnx"
    good.write_bytes(b"the good model")
    shutil.copy(trained["two-classes"] / "head.safetensors", run / "head.safetensors")
    line = refused(command, run)
    assert f"RUN {run / 'head.safetensors'}: head tensors" in line and "this head belongs to another run" in line
    assert good.read_bytes() == b"the good model"
    assert [p.name for p in (run / "export").iterdir()] == ["model.onnx"]


def test_head_shapes_are_checked_without_recorded_shapes(trained, tmp_path):
    """Runs written before the manifest recorded the head's shapes: the head's output width is checked."""
    run = tmp_path / "two"
    shutil.copytree(trained["two-classes"], run)
    edit_manifest(run, lambda manifest: manifest["head"].pop("tensors"))
    tensors = load_file(str(run / "head.safetensors"))
    save_file({**tensors, "text_weights": torch.cat([tensors["text_weights"]] * 2)}, str(run / "head.safetensors"))
    line = refused("eval", run)
    assert "the head outputs 4 classes but the manifest names 2 (class_names); this head belongs to another run" in line
    save_file({**tensors, "text_weights": tensors["text_weights"][:, :16].contiguous()}, str(run / "head.safetensors"))
    line = refused("export", run)
    assert "the head does not take the backbone's 32-dimensional features" in line


def test_head_tensor_of_another_shape_than_recorded(trained, tmp_path):
    run = tmp_path / "two"
    shutil.copytree(trained["two-classes"], run)
    tensors = load_file(str(run / "head.safetensors"))
    save_file({**tensors, "text_weights": tensors["text_weights"][:, :16].contiguous()}, str(run / "head.safetensors"))
    line = refused("export", run)
    assert "head tensor text_weights has shape [2, 16] but the manifest records [2, 32]" in line


def test_full_disk_during_train_overwrite_is_one_line_and_leaves_nothing(trained, run, tmp_path, monkeypatch):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("clipedge.run_dir.save_file", full)
    data = json.loads((run / "clipedge.json").read_text())["data"]["root"]
    line = refused("train", data, "--out", run, "--overwrite", "--backbone", "test-tiny-vit", "--pretrained", "none",
                   "--shots", "2", "--views", "1", "--epochs", "1")
    assert line == (f"Error: --out {run}: no space left on the device (or over quota) while writing; nothing was "
                    "written and what was there is untouched; free some space and run again")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder or lock file left"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_full_disk_while_caching_features_is_one_line(run, monkeypatch):
    """safetensors reports a full disk as its own error type, with the OS error in its text."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("clipedge.feature_cache.save_file", full)
    shutil.rmtree(run / "cache")
    line = refused("eval", run)
    assert f"feature cache {run / 'cache'}" in line and "no space left on the device" in line
    assert not list((run / "cache").glob("*.partial"))


def test_full_disk_during_export_is_one_line_and_keeps_the_model(run, monkeypatch):
    model = run / "model.onnx"
    model.write_bytes(b"the good model")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("onnx.save", full)
    line = refused("export", run, "--out", model)
    assert line.startswith(f"Error: --out {model}: no space left on the device"), line
    assert model.read_bytes() == b"the good model"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    shutil.Error([("a", "b", "[Errno 28] No space left on device: 'a' -> 'b'")]),  # what copytree raises
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
])
def test_every_form_of_a_full_disk_is_recognised(error):
    from clipedge.core.atomic import DiskFull, raise_if_disk_full

    with pytest.raises(DiskFull, match="no space left on the device"):
        raise_if_disk_full(error, Path("run"))
    raise_if_disk_full(OSError(errno.EACCES, "Permission denied"), Path("run"))  # not a full disk: left alone
