"""Classifier with a class bank: same predictions as the fused graph, classes learned, removed and renamed on the
device, and every bad input refused in one line with nothing changed or half-written."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from class_bank_models import DIM, Encoder, adaptable_export, colour_frames, write_colour_folder, write_fused_model

from clipedge.core.errors import ClipedgeError
from clipedge.runtime import Classifier
from clipedge.runtime.classes import bank_path_for, load_bank


def labels(classifier: Classifier, name: str, count: int = 6, seed: int = 11) -> list[str]:
    return [p.label for p in classifier.predict(colour_frames(name, count, seed=seed, noise=12))]


@pytest.fixture
def model(tmp_path) -> Path:
    return adaptable_export(tmp_path / "export", ["red", "green", "blue"], cache=True)


def test_bank_matches_the_fused_graph_probabilities_and_rejection(tmp_path):
    model = adaptable_export(tmp_path / "a", ["red", "green", "blue", "yellow"], cache=True, temperature=0.6,
                             rejection={"score": "max_prob", "threshold": 0.9})
    bank = load_bank(bank_path_for(model))
    bank.bias = np.array([0.3, -0.2, 0.1, 0.0], dtype=np.float32)
    fused = write_fused_model(tmp_path / "fused.onnx", Encoder.make(0), bank)
    shutil.copy(model, tmp_path / "b.onnx")
    from clipedge.runtime.classes import save_bank

    save_bank(dataclasses.replace(bank, space={**bank.space}), tmp_path / "b.classes.npz")
    frames = np.concatenate([colour_frames(n, 8, seed=5, noise=60) for n in ["red", "green", "blue", "yellow"]])
    with Classifier(fused) as reference, Classifier(tmp_path / "b.onnx") as adaptable:
        expected, got = reference.infer(frames), adaptable.infer(frames)
        assert np.abs(got["probs"] - expected["probs"]).max() < 1e-6
        assert np.abs(got["logits"] - expected["logits"]).max() < 1e-4
        mine, theirs = adaptable.predict(frames), reference.predict(frames)
        assert [(p.label, p.indices, p.rejected) for p in mine] == [(p.label, p.indices, p.rejected) for p in theirs]
        assert any(p.rejected for p in mine) and not all(p.rejected for p in mine), "the threshold decides some"
        assert adaptable.labels == reference.labels and adaptable.temperature == 0.6


def test_add_by_name_from_images_and_both_then_classify_with_them(model, tmp_path):
    with Classifier(model) as classifier:
        named = classifier.add_class("yellow")
        assert (named.source, named.templates, named.images, named.index) == ("name", 2, 0, 3)
        assert labels(classifier, "yellow") == ["yellow"] * 6 and labels(classifier, "red") == ["red"] * 6
        learned = classifier.add_class("purple", images=write_colour_folder(tmp_path / "purple", "purple", 4))
        assert (learned.source, learned.images, learned.generator) == ("images", 4, "gda")
        assert labels(classifier, "purple") == ["purple"] * 6
        both = classifier.add_class("orange", images=colour_frames("orange", 4, seed=2), prompt="a photo of a {}.")
        assert (both.source, both.templates, both.images) == ("name+images", 1, 4)
        assert labels(classifier, "orange") == ["orange"] * 6 and labels(classifier, "yellow") == ["yellow"] * 6
        bank = classifier.classes.bank
        assert bank.names == ["red", "green", "blue", "yellow", "purple", "orange"]
        assert bank.image_counts.tolist() == [4, 4, 4, 0, 4, 4]
        assert np.bincount(bank.cache_labels).tolist() == [4, 4, 4, 0, 4, 4], "image classes join the cache"
        assert np.allclose(bank.image_sums[4], Encoder.make(0).embed(colour_frames("purple", 4)).sum(0), atol=1e-5)
        assert bank.revision == 3 and [p["revision"] for p in bank.provenance][3:] == [1, 2, 3]
        assert classifier.save_classes() == bank_path_for(model)
    with Classifier(model) as reloaded:
        assert reloaded.labels == bank.names and labels(reloaded, "purple") == ["purple"] * 6


def test_images_only_without_enough_statistics_falls_back_to_a_prototype(tmp_path):
    model = adaptable_export(tmp_path / "e", ["red", "green"], shots=1)  # 2 images, 2 classes: no scatter dof
    with Classifier(model) as classifier:
        assert classifier.add_class("blue", images=colour_frames("blue", 1)).generator == "prototype"
        assert labels(classifier, "blue") == ["blue"] * 6 and labels(classifier, "red") == ["red"] * 6


def test_a_named_class_beside_learned_rows_takes_their_mean_norm_and_bias(tmp_path):
    model = adaptable_export(tmp_path / "p", ["red", "green", "blue"], rows="learned")
    with Classifier(model) as classifier:
        trained = classifier.classes.bank
        classifier.add_class("yellow")
        bank = classifier.classes.bank
        norms = np.linalg.norm(bank.weights, axis=1)
        assert np.isclose(norms[3], np.linalg.norm(trained.weights, axis=1).mean(), rtol=1e-5)
        assert np.isclose(bank.bias[3], trained.bias.mean())
        assert labels(classifier, "yellow") == ["yellow"] * 6 and labels(classifier, "blue") == ["blue"] * 6


def test_replace_remove_rename(model):
    with Classifier(model) as classifier:
        with pytest.raises(ClipedgeError, match="'green': already in the bank; replace it explicitly"):
            classifier.add_class("green", images=colour_frames("green", 3))
        replaced = classifier.add_class("green", images=colour_frames("green", 3, seed=4), replace=True)
        assert replaced.replaced and replaced.index == 1 and classifier.labels == ["red", "green", "blue"]
        assert np.bincount(classifier.classes.bank.cache_labels).tolist() == [4, 3, 4]
        classifier.remove_class("red")
        bank = classifier.classes.bank
        assert bank.names == ["green", "blue"] and np.bincount(bank.cache_labels).tolist() == [3, 4]
        assert set(labels(classifier, "red")) <= {"green", "blue"} and labels(classifier, "blue") == ["blue"] * 6
        classifier.rename_class("blue", "navy")
        assert labels(classifier, "blue") == ["navy"] * 6 and classifier.classes.bank.provenance[1]["name"] == "navy"
        classifier.remove_class("green")
        with pytest.raises(ClipedgeError, match="the last class in the bank"):
            classifier.remove_class("navy")
        with pytest.raises(ClipedgeError, match="'teal': not in the bank"):
            classifier.rename_class("teal", "cyan")


@pytest.mark.parametrize(("name", "message"), [
    ("", "empty"), ("   ", "empty"), ("fork\nlift", "line break or control character"),
    ("tab\there", "U\\+0009"), ("nul\x00", "U\\+0000"), ("line\u2028sep", "U\\+2028"),
    ("Unknown", "reserved for rejected predictions"), (3, "expected a string"),
])
def test_bad_names_are_refused_and_change_nothing(model, name, message):
    with Classifier(model) as classifier:
        before = classifier.classes.bank
        with pytest.raises(ClipedgeError, match=message) as error:
            classifier.add_class(name, images=colour_frames("red", 2))
        assert "\n" not in str(error.value)
        with pytest.raises(ClipedgeError, match=message):
            classifier.rename_class("red", name)
        assert classifier.classes.bank is before


def test_image_folders_skip_what_does_not_decode_and_refuse_when_nothing_does(model, tmp_path):
    folder = write_colour_folder(tmp_path / "mixed", "yellow", 3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "empty.jpg").write_bytes(b"")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not an image")
    (junk / "b.jpg").write_bytes(b"")
    with Classifier(model) as classifier:
        learned = classifier.add_class("yellow", images=[folder])
        assert learned.images == 3 and sorted(s.path.name for s in learned.skipped) == ["broken.png", "empty.jpg"]
        assert all(s.reason for s in learned.skipped)
        before = classifier.classes.bank
        with pytest.raises(ClipedgeError, match=r"none of the 2 files decodes \(.*not-an-image.*\)") as error:
            classifier.add_class("purple", images=junk)
        assert "\n" not in str(error.value) and classifier.classes.bank is before
        with pytest.raises(ClipedgeError, match="no such file or folder"):
            classifier.add_class("purple", images=tmp_path / "absent")


def test_banks_of_other_models_and_edited_banks_are_refused(model, tmp_path):
    other = adaptable_export(tmp_path / "other", ["red", "green"], seed=1)
    with pytest.raises(ClipedgeError, match="belongs to another model or backbone"):
        Classifier(model, classes=bank_path_for(other))
    data = bytearray(bank_path_for(model).read_bytes())
    data[-200] ^= 0xFF  # inside the zip's directory or the last array
    edited = tmp_path / "edited.classes.npz"
    edited.write_bytes(bytes(data))
    with pytest.raises(ClipedgeError, match="class bank .*edited.classes.npz"):
        Classifier(model, classes=edited)


def test_no_text_model_no_embeddings_and_fixed_models_are_explained(tmp_path):
    model = adaptable_export(tmp_path / "notext", ["red", "green"], text=False)
    with Classifier(model) as classifier:
        with pytest.raises(ClipedgeError, match=r"adding a class by name needs it: .*clipedge export RUN --adaptable"):
            classifier.add_class("blue")
        assert classifier.add_class("blue", images=colour_frames("blue", 3)).source == "images"
    with_text = adaptable_export(tmp_path / "text", ["red", "green"])
    (with_text.parent / "model.text.onnx").unlink()
    with Classifier(with_text) as classifier, pytest.raises(ClipedgeError, match="text model .* missing"):
        classifier.add_class("blue")
    bank = load_bank(bank_path_for(model))
    fused = write_fused_model(tmp_path / "fused.onnx", Encoder.make(0), bank)
    with Classifier(fused) as fixed, pytest.raises(ClipedgeError, match="not adaptable, its classes are fixed"):
        fixed.add_class("blue", images=colour_frames("blue", 2))
    import onnx

    graph = onnx.load(str(fused))
    graph.graph.output.pop()  # drop the embeddings output: a plain fused export
    onnx.save(graph, str(tmp_path / "plain.onnx"))
    with pytest.raises(ClipedgeError, match="exported without embeddings"):
        Classifier(tmp_path / "plain.onnx", classes=bank_path_for(model))
    assert DIM == bank.dim
