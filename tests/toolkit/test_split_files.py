"""CoOp split files: prompt-ready class names, and refusal of splits that overlap or name a label two ways."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.cli import main
from clipedge.data import read_split_file
from clipedge.prompts import build_text_classifier
from clipedge.run_dir import load_run

DISHES = {"apple_pie": (200, 150, 60), "baby_back_ribs": (140, 50, 30), "beef_tartare": (190, 40, 50)}


@pytest.fixture
def coop_data(tmp_path):
    """Food-101-style folders and a split file in CoOp's format, names with underscores as CoOp keeps them."""
    root = write_image_folder(tmp_path / "images", per_class=9, classes=DISHES)
    rows = [[f"{name}/{i:03d}.png", label, name] for label, name in enumerate(DISHES) for i in range(9)]
    split = {"train": [r for r in rows if int(r[0][-7:-4]) < 5], "val": [r for r in rows if int(r[0][-7:-4]) in (5, 6)],
             "test": [r for r in rows if int(r[0][-7:-4]) > 6]}
    path = tmp_path / "split_zhou_Food101.json"
    path.write_text(json.dumps(split))
    return root, path, split


def test_underscored_names_train_with_spaces_in_the_manifest_and_prompts(coop_data, tmp_path):
    root, split_file, _ = coop_data
    assert read_split_file(root, split_file).class_names == ["apple pie", "baby back ribs", "beef tartare"]
    run = tmp_path / "run"
    clipedge.train(root, run, split=split_file, method="zero-shot", backbone="test-tiny-vit", pretrained="none",
                   shots=4, progress=False)
    loaded = load_run(run)
    assert loaded.class_names == ["apple pie", "baby back ribs", "beef tartare"]
    prompts: list[str] = []
    backbone = clipedge.load_backbone("test-tiny-vit", "none")

    def encode(texts: list[str]) -> torch.Tensor:
        prompts.extend(texts)
        return backbone.encode_texts(texts)

    spaced = build_text_classifier(encode, loaded.class_names, loaded.manifest["templates"])
    torch.testing.assert_close(loaded.head.text_weights, spaced)  # W was built from these very prompts
    assert prompts == ["a photo of a apple pie.", "a photo of a baby back ribs.", "a photo of a beef tartare."]
    underscored = build_text_classifier(backbone.encode_texts, list(DISHES), loaded.manifest["templates"])
    assert not torch.allclose(loaded.head.text_weights, underscored)  # ... and the underscores would have mattered


@pytest.mark.parametrize("into", ["val", "test"])
def test_overlapping_splits_are_refused_naming_the_path_and_both_splits(coop_data, into):
    root, split_file, split = coop_data
    split[into].append(split["train"][2])
    split_file.write_text(json.dumps(split))
    result = CliRunner().invoke(main, ["train", str(root), "--out", str(split_file.parent / "run"), "--split",
                                       str(split_file), "--backbone", "test-tiny-vit", "--pretrained", "none"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: --split {split_file}: apple_pie/002.png is in both train and {into}; "
                                     "expected disjoint train, val and test lists")
    assert not (split_file.parent / "run").exists()


def test_val_and_test_overlap_through_another_spelling_of_the_path(coop_data):
    root, split_file, split = coop_data
    split["test"].append([f"./{split['val'][0][0]}", split["val"][0][1], split["val"][0][2]])
    split_file.write_text(json.dumps(split))
    with pytest.raises(clipedge.ClipedgeError, match=r"apple_pie/005.png is in both val and test"):
        read_split_file(root, split_file)


def test_a_label_named_two_ways_is_refused(coop_data):
    root, split_file, split = coop_data
    split["test"][0] = [split["test"][0][0], 0, "apple_tart"]
    split_file.write_text(json.dumps(split))
    with pytest.raises(clipedge.ClipedgeError) as error:
        read_split_file(root, split_file)
    assert str(error.value) == (f"--split {split_file}: label 0 is named 'apple_pie' and, in test, 'apple_tart'; "
                                "expected one class name per label")


def test_two_labels_with_one_name_are_refused(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=3)
    rows = [["red/000.png", 0, "red"], ["green/000.png", 1, "green"], ["blue/000.png", 2, "green"]]
    (tmp_path / "split.json").write_text(json.dumps({"train": rows, "val": [], "test": []}))
    with pytest.raises(clipedge.ClipedgeError, match="labels 1 and 2 share the class name 'green'"):
        read_split_file(root, tmp_path / "split.json")
