"""Image folders, split files, the few-shot sampler, image modes and prompt templates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import load_rgb
from clipedge.data import load_labelled_images, read_split_file, sample_few_shot, scan_image_folder
from clipedge.prompts import IMAGENET_TEMPLATES, build_text_classifier, resolve_templates


def test_folder_names_become_class_names(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=5, classes={"golden retriever": (200, 150, 50), "tabby cat": (90, 90, 90)})
    data = scan_image_folder(root)
    assert data.class_names == ["golden retriever", "tabby cat"]
    assert (root / "golden_retriever").is_dir()


def test_holdout_is_seeded_and_disjoint(image_folder):
    a, b = scan_image_folder(image_folder, split_seed=0), scan_image_folder(image_folder, split_seed=0)
    c = scan_image_folder(image_folder, split_seed=1)
    paths = {split: {s.relpath for s in a.splits[split]} for split in ("train", "val", "test")}
    assert paths == {split: {s.relpath for s in b.splits[split]} for split in paths}
    assert paths["test"] != {s.relpath for s in c.splits["test"]}
    assert not (paths["train"] & paths["test"]) and not (paths["train"] & paths["val"]) and not (paths["val"] & paths["test"])
    assert sum(len(v) for v in paths.values()) == 36


def test_sampler_is_deterministic_nested_and_disjoint_from_test(image_folder):
    data = scan_image_folder(image_folder)
    four = sample_few_shot(data.splits["train"], 4, seed=3)
    assert [s.relpath for s in four] == [s.relpath for s in sample_few_shot(data.splits["train"], 4, seed=3)]
    assert [s.relpath for s in four] != [s.relpath for s in sample_few_shot(data.splits["train"], 4, seed=4)]
    two = sample_few_shot(data.splits["train"], 2, seed=3)
    assert {s.relpath for s in two} <= {s.relpath for s in four}
    counts = np.bincount([s.label for s in four])
    assert counts.tolist() == [4, 4, 4]
    test_paths = {s.relpath for s in data.splits["test"]} | {s.relpath for s in data.splits["val"]}
    assert not test_paths & {s.relpath for s in four}


def test_sampler_warns_and_uses_all_when_a_class_is_short(image_folder, caplog):
    data = scan_image_folder(image_folder)
    chosen = sample_few_shot(data.splits["train"], 100, seed=0, class_names=data.class_names)
    assert len(chosen) == len(data.splits["train"])
    assert "fewer than --shots 100" in caplog.text


def test_sampler_rejects_zero_shots(image_folder):
    with pytest.raises(ClipedgeError, match="--shots 0"):
        sample_few_shot(scan_image_folder(image_folder).splits["train"], 0, seed=0)


def test_bad_files_are_skipped_and_counted(image_folder):
    folder = image_folder / "red"
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    good = (folder / "000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    data = scan_image_folder(image_folder)
    assert {s.path.name: s.reason for s in data.skipped} == {"empty.png": "empty", "notes.txt": "not-an-image",
                                                             "truncated.png": "truncated"}
    assert sum(len(v) for v in data.splits.values()) == 36


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
        assert image.mode == "I;16"
    else:
        image = rgb.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    image.save(path)
    loaded = load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)
    if mode == "I;16":  # rescaled to the full 8-bit range, not clipped to white
        values = np.asarray(loaded)
        assert values.min() == 0 and values.max() == 255


def test_split_file_is_read(image_folder, tmp_path):
    relpaths = sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png"))
    names = {"red": 0, "green": 1, "blue": 2}
    rows = [[r, names[r.split("/")[0]], r.split("/")[0]] for r in relpaths]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": rows[::3], "val": rows[1::3], "test": rows[2::3]}))
    data = load_labelled_images(image_folder, split)
    assert data.class_names == ["red", "green", "blue"]
    assert len(data.splits["test"]) == len(rows[2::3])


def test_split_file_errors_name_the_file(image_folder, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClipedgeError, match="bad.json: not valid JSON"):
        read_split_file(image_folder, bad)
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(ClipedgeError, match="'train', 'val' and 'test'"):
        read_split_file(image_folder, bad)


def test_templates(tmp_path):
    assert resolve_templates("single") == ["a photo of a {}."]
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    custom = tmp_path / "t.txt"
    custom.write_text("# comment\n{} texture.\n\na close-up of {}.\n")
    assert resolve_templates(str(custom)) == ["{} texture.", "a close-up of {}."]
    custom.write_text("no placeholder\n")
    with pytest.raises(ClipedgeError, match="exactly once"):
        resolve_templates(str(custom))
    with pytest.raises(ClipedgeError, match="--templates nope"):
        resolve_templates("nope")


def test_text_classifier_is_normalised_mean_of_normalised_embeddings():
    table = {"a x": [3.0, 0.0], "b x": [0.0, 1.0], "a y": [1.0, 1.0], "b y": [-2.0, 0.0]}

    def encode(texts):
        return torch.tensor([table[t] for t in texts])

    weights = build_text_classifier(encode, ["x", "y"], ["a {}", "b {}"])
    expected_x = torch.tensor([1.0, 1.0]) / 2**0.5  # mean of (1,0) and (0,1), normalised
    torch.testing.assert_close(weights[0], expected_x)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(2))
