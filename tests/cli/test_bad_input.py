"""Bad input: non-zero exit, one line naming the file or option, no traceback, nothing half-written."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_checks import fails_cleanly
from click.testing import CliRunner
from safetensors.torch import save_file

from clipedge.cli import main

BASE = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--shots", "2"]
TINY = [*BASE, "--views", "1", "--epochs", "1"]  # quick settings of the default method, clip-adapter




def test_missing_data_folder(tmp_path):
    fails_cleanly(["train", tmp_path / "nope", "--out", tmp_path / "run", *TINY], "nope: no such folder", tmp_path)


def test_class_folder_without_readable_images(image_folder, tmp_path):
    (image_folder / "purple").mkdir()
    (image_folder / "purple" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY], "purple: class folder has no readable image", tmp_path)


def test_single_class(tmp_path):
    from conftest import write_image_folder

    data = write_image_folder(tmp_path / "one", per_class=4, classes={"red": (255, 0, 0)})
    fails_cleanly(["train", data, "--out", tmp_path / "run", *TINY], "at least 2", tmp_path)


def test_corrupt_files_among_good_ones_are_skipped_and_counted(image_folder, tmp_path):
    (image_folder / "red" / "zero.png").write_bytes(b"")
    (image_folder / "green" / "readme.md").write_text("hello")
    result = CliRunner().invoke(main, ["train", str(image_folder), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable file(s)" in result.stderr
    assert json.loads((tmp_path / "run" / "clipedge.json").read_text())["data"]["skipped_files"] == 2


def test_zero_shots(image_folder, tmp_path):
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--shots", "0"], "--shots 0", tmp_path)


def test_unknown_backbone_suggests_close_matches(image_folder, tmp_path):
    line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", "--backbone", "ViT-B-61", "--pretrained", "none"], "--backbone", tmp_path)
    assert "did you mean" in line and "ViT-B-16" in line


def test_unknown_method(image_folder, tmp_path):
    line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--method", "clip-adaptor"], "--method clip-adaptor", tmp_path)
    assert "did you mean clip-adapter" in line


def test_checkpoint_that_does_not_fit(image_folder, tmp_path):
    checkpoint = tmp_path / "wrong.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(3, 3, 3, 3), "made.up": torch.zeros(1)}, str(checkpoint))
    line = fails_cleanly(
        ["train", image_folder, "--out", tmp_path / "run", "--backbone", "test-tiny-vit", "--pretrained", checkpoint],
        "does not fit test-tiny-vit", tmp_path,
    )
    assert "unexpected keys: made.up" in line and "missing keys" in line and "shape-mismatched keys: visual.conv1.weight" in line


class _WritesAFileWhenUnpickled:
    """A pickle that runs code on load: the checkpoint an attacker would ship."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickled_checkpoint_is_never_unpickled(image_folder, tmp_path):
    marker = tmp_path / "code-ran"
    checkpoints = {"evil.pt": lambda path: torch.save({"state_dict": {"w": _WritesAFileWhenUnpickled(marker)}}, path),
                   "object.pt": lambda path: torch.save({"w": object()}, path),
                   "plain.bin": lambda path: path.write_bytes(pickle.dumps({"w": _WritesAFileWhenUnpickled(marker)}))}
    for name, write in checkpoints.items():
        write(tmp_path / name)
        line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", "--backbone", "test-tiny-vit",
                              "--pretrained", tmp_path / name], "not a weights-only checkpoint", tmp_path)
        assert line.endswith("clipedge never unpickles code — convert it to safetensors"), line
        assert "weights_only" not in line
    assert not marker.exists()
    (tmp_path / "garbage.pt").write_bytes(b"plainly not a checkpoint")  # no pickle at all: a different message
    line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", "--backbone", "test-tiny-vit",
                          "--pretrained", tmp_path / "garbage.pt"], "cannot read checkpoint", tmp_path)
    assert "weights_only" not in line


def test_offline_pretrained_tag_says_what_to_pass(image_folder, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("open_clip.factory.download_pretrained", offline)
    line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", "--backbone", "RN50", "--pretrained", "openai"], "--pretrained", tmp_path)
    assert "--pretrained none" in line


def test_non_empty_run_needs_overwrite(image_folder, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    fails_cleanly(["train", image_folder, "--out", run, *TINY], "--overwrite")
    assert (run / "keep.txt").read_text() == "precious"


def test_newer_manifest_version_is_refused(image_folder, tmp_path):
    run = tmp_path / "run"
    assert CliRunner().invoke(main, ["train", str(image_folder), "--out", str(run), *BASE, "--method", "zero-shot"]).exit_code == 0
    manifest = json.loads((run / "clipedge.json").read_text())
    manifest["format_version"] = 99
    (run / "clipedge.json").write_text(json.dumps(manifest))
    line = fails_cleanly(["eval", run], "version 99")
    assert "version 1" in line


def test_not_a_run_directory(tmp_path):
    fails_cleanly(["eval", tmp_path], "not a run directory")
    fails_cleanly(["eval", tmp_path / "missing"], "no such run directory")


def test_bad_alpha_and_device(image_folder, tmp_path):
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--alpha", "lots"], "--alpha lots")
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--device", "tpu"], "--device tpu")


@pytest.mark.parametrize(("method", "option", "takers"), [
    ("tip-adapter", ["--alpha", "0.3"], "clip-adapter"),
    ("tip-adapter", ["--branch", "text"], "clip-adapter"),
    ("zero-shot", ["--recipe", "fast"], "clip-adapter or linear-probe"),
    ("tip-adapter", ["--epochs", "5"], "zs-lp or clap or clip-adapter or lp++ or tip-adapter-f"),
])
def test_an_option_the_method_does_not_take_is_refused(image_folder, tmp_path, method, option, takers):
    line = fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *BASE, "--method", method, *option],
                         f"{option[0]}: --method {method} does not take this option", tmp_path)
    assert line.endswith(f"it applies to --method {takers}")


def test_bad_recipe_and_branch(image_folder, tmp_path):
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--recipe", "paper"],
                  "--recipe paper: expected one of official, fast", tmp_path)
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *TINY, "--branch", "audio"],
                  "--branch audio: expected one of visual, text, both", tmp_path)
    fails_cleanly(["train", image_folder, "--out", tmp_path / "run", *BASE, "--method", "linear-probe", "--recipe", "official",
                   "--views", "4"],
                  "--views 4: the official linear-probe recipe trains on un-augmented features", tmp_path)


def test_interrupted_training_leaves_no_run(image_folder, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("clipedge.training.build_text_classifier", boom)
    result = CliRunner().invoke(main, ["train", str(image_folder), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == [image_folder]


def test_console_script_help_lists_train_and_eval():
    output = subprocess.run([sys.executable, "-m", "clipedge.cli", "--help"], capture_output=True, text=True)
    assert output.returncode == 0, output.stderr
    assert "train" in output.stdout and "eval" in output.stdout
