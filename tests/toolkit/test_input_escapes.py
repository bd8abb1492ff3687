"""Inputs that escape or confuse: split-file paths outside DATA, class-folder symlinks that loop, class names no
labels file can hold, and data without val or test images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.cli import main
from clipedge.core.labels import label_problem
from clipedge.data import read_split_file
from clipedge.export.metadata import set_onnx_metadata
from clipedge.runtime.contract import decode_metadata
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--shots", "2", "--method", "zero-shot"]


def train(*args: object):
    return CliRunner().invoke(main, ["train", *(str(a) for a in args), *TINY])


def refused(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def split_data(tmp_path) -> tuple[Path, Path, dict]:
    root = write_image_folder(tmp_path / "data", per_class=6)
    rows = [[f"{name}/{i:03d}.png", label, name] for label, name in enumerate(["blue", "green", "red"]) for i in range(6)]
    split = {"train": [r for r in rows if int(r[0][-7:-4]) < 3], "val": [r for r in rows if int(r[0][-7:-4]) == 3],
             "test": [r for r in rows if int(r[0][-7:-4]) > 3]}
    (tmp_path / "secret").mkdir()
    shutil.copy(root / "red" / "000.png", tmp_path / "secret" / "shadow.png")  # a readable image outside DATA
    return root, tmp_path / "split.json", split


@pytest.mark.parametrize("entry", ["../secret/shadow.png", "../../etc/shadow", "ABSOLUTE", "red/../../secret/shadow.png",
                                   "red/link.png"])
def test_split_entries_outside_the_data_root_are_refused_naming_the_entry(split_data, tmp_path, entry):
    root, split_file, split = split_data
    (root / "red" / "link.png").symlink_to(tmp_path / "secret" / "shadow.png")  # inside DATA, pointing out
    entry = str(tmp_path / "secret" / "shadow.png") if entry == "ABSOLUTE" else entry
    split["train"].append([entry, 2, "red"])
    split_file.write_text(json.dumps(split))
    line = refused(train(root, "--out", tmp_path / "run", "--split", split_file))
    assert f"--split {split_file}: train entry {entry!r} resolves to " in line
    assert f"outside the data root {root.resolve()}; expected paths inside DATA" in line
    assert not (tmp_path / "run").exists()


def test_split_entry_path_must_be_a_string(split_data):
    root, split_file, split = split_data
    split["val"].append([7, 0, "blue"])
    split_file.write_text(json.dumps(split))
    with pytest.raises(clipedge.ClipedgeError, match=r"val entry \[7, 0, 'blue'\] is not \[path, label, class name\]"):
        read_split_file(root, split_file)


def test_a_symlinked_class_folder_still_trains_and_evaluates(tmp_path):
    """A class folder may be a symlink to images elsewhere: its files are inside DATA as the scan and the run's
    own split.json see them, so eval reads them back."""
    root = write_image_folder(tmp_path / "data", per_class=6)
    shutil.move(root / "red", tmp_path / "red-elsewhere")
    (root / "red").symlink_to(tmp_path / "red-elsewhere")
    assert train(root, "--out", tmp_path / "run").exit_code == 0
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    assert {row["class"] for row in json.loads(result.stdout)["per_class"]} == {"blue", "green", "red"}


@pytest.mark.parametrize("target", [".", "..", "green/.."])
def test_class_folder_symlinks_that_loop_are_skipped(tmp_path, target):
    root = write_image_folder(tmp_path / "data", per_class=6)
    (root / "self").symlink_to(target)
    result = train(root, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "skipped " + str(root / "self") + ": a symlink to" in result.stderr and "(a loop, not a class)" in result.stderr
    manifest = json.loads((tmp_path / "run" / "clipedge.json").read_text())
    assert manifest["class_names"] == ["blue", "green", "red"]
    assert sum(manifest["data"]["counts"].values()) <= 18, "no image counted twice"


@pytest.mark.parametrize("name, shown", [("gr\neen", "'\\n'"), ("gr\reen", "'\\r'"), ("gr\teen", "'\\t'"),
                                         ("gr\u2028een", "'\\u2028'"), ("gr\x85een", "'\\x85'")])
def test_class_folder_names_no_labels_file_can_hold_are_refused(tmp_path, name, shown):
    root = write_image_folder(tmp_path / "data", per_class=4)
    (root / "green").rename(root / name)
    line = refused(train(root, "--out", tmp_path / "run"))
    assert line == (f"Error: DATA {root}: class name {name!r} contains {shown}, which a labels file (one class per "
                    "line) cannot hold; rename that class")
    assert not (tmp_path / "run").exists()


def test_split_class_names_with_a_line_break_are_refused(split_data, tmp_path):
    root, split_file, split = split_data
    for row in (r for rows in split.values() for r in rows if r[2] == "green"):
        row[2] = "green\nblue"
    split_file.write_text(json.dumps(split))
    line = refused(train(root, "--out", tmp_path / "run", "--split", split_file))
    assert f"--split {split_file}: class name 'green\\nblue' contains '\\n'" in line


def test_label_problems():
    assert label_problem("golden retriever") is None and label_problem("crème brûlée") is None
    assert label_problem(" ") == "is empty" and label_problem("a\0b") == "contains '\\x00'"


def test_triton_labels_refuse_a_line_break(tmp_path):
    """A model whose metadata names a class with a line break (exported before training refused such names, or
    edited): Triton's labels.txt would have one line more than the model has classes."""
    root = write_image_folder(tmp_path / "data", per_class=4)
    clipedge.train(root, tmp_path / "run", method="zero-shot", backbone="test-tiny-vit", pretrained="none", shots=2,
                   progress=False)
    model_path = clipedge.export.export_model(tmp_path / "run", parity_count=2, progress=False).artifact
    model = onnx.load(str(model_path))
    metadata = decode_metadata(read_onnx_metadata(model_path))
    set_onnx_metadata(model, {**metadata, "class_names": ["blue", "gr\neen", "red"]})
    onnx.save(model, str(model_path))
    line = refused(CliRunner().invoke(main, ["repository", str(model_path), "--out", str(tmp_path / "repo")]))
    assert f"model {model_path}: class name 'gr\\neen' contains '\\n', which Triton's labels.txt" in line
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_data_without_val_or_test_images_says_so(tmp_path):
    root = write_image_folder(tmp_path / "data", per_class=2)  # fewer than 3 per class: nothing held out
    result = train(root, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "no val images" in line or "no test images" in line]
    assert len(warnings) == 2, result.stderr
    assert "val top-1 is not measured" in warnings[0] and "test top-1 is not measured" in warnings[1]
    manifest = json.loads((tmp_path / "run" / "clipedge.json").read_text())
    assert [note.split(" (")[0] for note in manifest["data"]["notes"]] == ["no val images", "no test images"]
    assert manifest["metrics"]["val_top1"] is None and manifest["metrics"]["test_top1"] is None
    assert "-" in result.stdout.splitlines()[2].split(), "the empty metrics show as '-' in the table"
