"""``clipedge classes``: list, add, remove and rename an adaptable model's classes; predict and bench read the
bank; every bad input exits 2 with one line and leaves the bank file as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from class_bank_models import Encoder, adaptable_export, write_colour_folder, write_fused_model
from cli_checks import fails_cleanly
from click.testing import CliRunner

from clipedge.cli import main
from clipedge.runtime.classes import bank_path_for, load_bank


def run(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture
def model(tmp_path) -> Path:
    return adaptable_export(tmp_path / "export", ["red", "green", "blue"], cache=True)


def test_add_rename_remove_then_predict_and_bench_use_the_bank(model, tmp_path):
    photos = write_colour_folder(tmp_path / "photos" / "purple", "purple", 5)
    assert "3 classes, revision 0" in run("classes", model, "list")
    assert "added class 'yellow' as row 3 (by name, 2 prompts)" in run("classes", model, "add", "yellow")
    added = run("classes", model, "add", "purple", "--images", photos)
    assert "added class 'purple' as row 4 (from images, 5 images, gda row)" in added
    both = run("classes", model, "add", "orange", "--images", write_colour_folder(tmp_path / "o", "orange", 3),
               "--with-name")
    assert "(name + images, 3 images, 2 prompts" in both
    assert "replaced class 'orange'" in run("classes", model, "add", "orange", "--prompt", "a photo of a {}.",
                                             "--replace")
    run("classes", model, "rename", "yellow", "gold")
    run("classes", model, "remove", "red")
    listing = run("classes", model, "list")
    assert "5 classes, revision 6" in listing
    assert [line.split()[1] for line in listing.splitlines()[3:]] == ["green", "blue", "gold", "purple", "orange"]
    bank = load_bank(bank_path_for(model))
    assert bank.provenance[4]["prompt"] == "a photo of a {}." and bank.provenance[4]["source"] == "name"
    predictions = json.loads(run("predict", model, photos, "--json"))
    assert {p["label"] for p in predictions["predictions"]} == {"purple"}
    report = json.loads(run("bench", model, "--batch", "1,4", "--iters", "3", "--warmup", "1", "--json"))
    assert [r["batch"] for r in report["results"]] == [1, 4]
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".")], "no temporary bank left behind"


def test_bad_input_exits_2_in_one_line_and_leaves_the_bank(model, tmp_path):
    bank = bank_path_for(model)
    before = bank.read_bytes()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (junk / "b.png").write_bytes(b"")
    other = adaptable_export(tmp_path / "other", ["red", "green"], seed=2)
    cases = [
        (["add", "green"], "'green': already in the bank; replace it explicitly"),
        (["add", ""], "empty"),
        (["add", "fork\nlift"], "line break or control character"),
        (["add", "purple", "--images", junk], "none of the 2 files decodes"),
        (["add", "purple", "--images", tmp_path / "absent"], "no such file or folder"),
        (["add", "purple", "--prompt", " "], "--prompt ' ': empty"),
        (["rename", "teal", "navy"], "'teal': not in the bank"),
        (["rename", "red", "green"], "'green': already in the bank"),
        (["list", "--bank", bank_path_for(other)], "belongs to another model or backbone"),
    ]
    for args, expected in cases:
        fails_cleanly(["classes", model, *args], expected)
        assert bank.read_bytes() == before, args
    run("classes", model, "remove", "red")
    run("classes", model, "remove", "green")
    fails_cleanly(["classes", model, "remove", "blue"], "the last class in the bank")
    truncated = tmp_path / "truncated.classes.npz"
    truncated.write_bytes(bank.read_bytes()[:-100])
    fails_cleanly(["classes", model, "list", "--bank", truncated], "not a readable .npz bank")


def test_missing_text_model_missing_embeddings_and_fixed_models(tmp_path):
    model = adaptable_export(tmp_path / "notext", ["red", "green"], text=False)
    fails_cleanly(["classes", model, "add", "blue"], "clipedge export RUN --adaptable")
    bank = load_bank(bank_path_for(model))
    fused = write_fused_model(tmp_path / "fused.onnx", Encoder.make(0), bank)
    fails_cleanly(["classes", fused, "add", "blue"], "not adaptable, its classes are fixed")
    import onnx

    graph = onnx.load(str(fused))
    graph.graph.output.pop()
    onnx.save(graph, str(tmp_path / "plain.onnx"))
    fails_cleanly(["classes", tmp_path / "plain.onnx", "list", "--bank", bank_path_for(model)],
                  "exported without embeddings")
    (tmp_path / "notext" / "model.classes.npz").unlink()
    fails_cleanly(["classes", model, "list"], "no such file")
