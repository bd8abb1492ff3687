"""The class bank file: round trip, integrity (checksum, schema, consistency), embedding space, readout."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from class_bank_models import DIM, Encoder, make_bank

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.classes import ClassBank, bank_logits, bank_path_for, load_bank, save_bank
from clipedge.runtime.classes.manifest import manifest_problem
from clipedge.runtime.classes.readout import probabilities
from clipedge.runtime.schemas import SCHEMA_VERSIONS, load_schema

SPACE = {"backbone": "fixture-linear", "pretrained": "none", "weights_sha256": "ab" * 32, "dim": DIM,
         "image_model_sha256": "cd" * 32}


def bank(**options) -> ClassBank:
    return make_bank(Encoder.make(0), ["red", "green", "blue"], SPACE, **options)


def manifest_of(path: Path) -> dict:
    with np.load(path) as archive:
        return json.loads(archive["manifest"].tobytes().decode())


def rewrite(path: Path, manifest: dict | None = None, **arrays: np.ndarray) -> None:
    """Rewrite a bank file with some arrays or its manifest replaced, the checksum left as it was."""
    with np.load(path) as archive:
        contents = {name: archive[name] for name in archive.files}
    contents.update(arrays)
    if manifest is not None:
        contents["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "model.classes.npz"
    save_bank(bank(cache=True, rejection={"score": "energy", "threshold": 3.5}, temperature=0.7), path)
    return path


def test_round_trip_keeps_every_field_and_the_manifest_follows_the_shipped_schema(saved):
    original = bank(cache=True, rejection={"score": "energy", "threshold": 3.5}, temperature=0.7)
    loaded = load_bank(saved, expect_space=SPACE)
    for field in dataclasses.fields(ClassBank):
        mine, theirs = getattr(original, field.name), getattr(loaded, field.name)
        if isinstance(mine, np.ndarray):
            assert theirs.dtype == mine.dtype and np.array_equal(theirs, mine), field.name
        else:
            assert theirs == mine, field.name
    manifest = manifest_of(saved)
    schema = load_schema("class_bank")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(manifest)
    assert manifest["format_version"] == SCHEMA_VERSIONS["class_bank"] and manifest_problem(manifest) is None
    assert sorted(zipfile.ZipFile(saved).namelist()) == sorted(
        f"{n}.npy" for n in ("manifest", "weights", "bias", "cache_keys", "cache_labels", "image_sums",
                             "image_counts", "scatter"))


BROKEN = {
    "unknown source": lambda m: m["classes"][0].update(source="guessed"),
    "no classes": lambda m: m.update(classes=[]),
    "missing key": lambda m: m.pop("space"),
    "bad rows kind": lambda m: m["head"].update(rows="mixed"),
    "boolean revision": lambda m: m.update(revision=True),
    "negative images": lambda m: m["classes"][1].update(images=-1),
    "cache without beta": lambda m: m.update(cache={"alpha": 1.0}),
    "zero temperature": lambda m: m.update(temperature=0),
    "short checksum": lambda m: m.update(checksum="abc"),
    "empty name": lambda m: m["classes"][2].update(name=""),
    "other format": lambda m: m.update(format="someone-else"),
}


@pytest.mark.parametrize("breakage", BROKEN)
def test_the_torch_free_schema_check_refuses_what_jsonschema_refuses(saved, breakage):
    manifest = manifest_of(saved)
    BROKEN[breakage](manifest)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_schema("class_bank")).validate(manifest)
    assert manifest_problem(manifest) is not None
    rewrite(saved, manifest)
    with pytest.raises(ClipedgeError, match=r"^class bank .*model\.classes\.npz: ") as error:
        load_bank(saved)
    assert "\n" not in str(error.value)


def test_an_edited_row_or_class_name_fails_the_checksum(saved, tmp_path):
    weights = load_bank(saved).weights.copy()
    weights[1, 0] += 1e-3
    rewrite(saved, weights=weights)
    with pytest.raises(ClipedgeError, match="checksum mismatch"):
        load_bank(saved)
    other = tmp_path / "other.classes.npz"
    save_bank(bank(), other)
    manifest = manifest_of(other)
    manifest["classes"][0]["name"] = "crimson"  # still valid under the schema: only the checksum catches it
    rewrite(other, manifest)
    with pytest.raises(ClipedgeError, match="checksum mismatch"):
        load_bank(other)


def test_truncated_missing_foreign_and_newer_files_are_refused_in_one_line(saved, tmp_path):
    truncated = tmp_path / "truncated.classes.npz"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    text = tmp_path / "text.classes.npz"
    text.write_text("not a bank")
    newer = tmp_path / "newer.classes.npz"
    newer.write_bytes(saved.read_bytes())
    rewrite(newer, {**manifest_of(saved), "format_version": 99})
    cases = {truncated: "not a readable .npz bank", text: "not a readable .npz bank",
             tmp_path / "absent.classes.npz": "no such file", newer: "upgrade clipedge"}
    for path, message in cases.items():
        with pytest.raises(ClipedgeError, match=message) as error:
            load_bank(path)
        assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_bank_from_another_embedding_space_is_refused(saved):
    for key, value in (("backbone", "ViT-B-32"), ("dim", 512), ("image_model_sha256", "ef" * 32)):
        with pytest.raises(ClipedgeError, match=f"belongs to another model or backbone \\({key} is"):
            load_bank(saved, expect_space={**SPACE, key: value})


def test_save_is_atomic_and_refuses_an_inconsistent_bank_before_touching_the_file(saved):
    before = saved.read_bytes()
    broken = dataclasses.replace(load_bank(saved), bias=np.zeros(5, dtype=np.float32))
    with pytest.raises(ClipedgeError, match="bias has shape"):
        save_bank(broken, saved)
    repeated = dataclasses.replace(load_bank(saved), names=["red", "red", "blue"])
    with pytest.raises(ClipedgeError, match="class names repeat"):
        save_bank(repeated, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name], "no temporary file left behind"


def test_bank_path_for_an_onnx_and_its_engine():
    assert bank_path_for(Path("out/model.onnx")) == Path("out/model.classes.npz")
    assert bank_path_for(Path("out/model.engine")) == Path("out/model.classes.npz")
    assert bank_path_for("cam.plan") == Path("cam.classes.npz")


def shuffled_without_keys_of(cached: ClassBank, unkeyed: int, rng: np.random.Generator) -> ClassBank:
    """The bank with its cache keys in random order and none left for class ``unkeyed`` (a class added by name)."""
    kept = rng.permutation(np.flatnonzero(cached.cache_labels != unkeyed))
    return dataclasses.replace(cached, cache_keys=cached.cache_keys[kept], cache_labels=cached.cache_labels[kept])


@pytest.mark.parametrize("layout", ["as made", "shuffled, a class without keys"])
def test_bank_logits_is_the_readout_formula(layout):
    rng = np.random.default_rng(3)
    cached = bank(cache=True)
    cached.bias = rng.normal(size=3).astype(np.float32)
    if layout != "as made":
        cached = shuffled_without_keys_of(cached, 1, rng)
    embeddings = rng.normal(size=(5, DIM))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    onehot = np.eye(3)[cached.cache_labels]
    expected = (cached.logit_scale * embeddings @ cached.weights.T.astype(np.float64) + cached.bias
                + cached.cache_alpha * np.exp(-cached.cache_beta * (1 - embeddings @ cached.cache_keys.T)) @ onehot)
    logits = bank_logits(cached, embeddings)
    assert logits.dtype == np.float32 and np.allclose(logits, expected, atol=1e-4)
    plain = bank()
    assert np.allclose(bank_logits(plain, embeddings), plain.logit_scale * embeddings @ plain.weights.T, atol=1e-4)
    probs = probabilities(logits, 0.5)
    assert np.allclose(probs, np.exp(expected / 0.5) / np.exp(expected / 0.5).sum(1, keepdims=True), atol=1e-6)
    with pytest.raises(ClipedgeError, match=rf"expected float32 \[N, {DIM}\]"):
        bank_logits(plain, embeddings[:, :4])
