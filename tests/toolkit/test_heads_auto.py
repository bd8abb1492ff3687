"""``method="auto"``: the tie rule, a failing candidate, every candidate failing, and the options auto refuses."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import write_image_folder
from test_heads import synthetic_problem

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.heads import HEADS, FewShotProblem
from clipedge.heads.gda import GdaHead
from clipedge.heads.selection import CANDIDATES, best_method, check_auto_options, select_head
from clipedge.run_dir import MANIFEST

COMMON = {"seed": 0, "device": "cpu", "precision": "fp32"}
QUICK = ("zero-shot", "gda", "tip-adapter", "linear-probe")


def test_every_registered_head_is_a_candidate_in_a_defined_order():
    assert sorted(CANDIDATES) == sorted(HEADS) and len(set(CANDIDATES)) == len(CANDIDATES)


def test_ties_go_to_the_simpler_head():
    assert best_method({"clip-adapter": 0.9, "gda": 0.9, "zs-lp": 0.8}) == "gda"
    assert best_method({"tip-adapter-f": 0.5, "zero-shot": 0.5}) == "zero-shot"
    assert best_method({"clip-adapter": 0.91, "gda": 0.9, "zero-shot": None}) == "clip-adapter"
    with pytest.raises(ClipedgeError, match="no candidate"):
        best_method({"gda": None})


def test_select_head_takes_the_best_val_figure_of_the_candidates():
    problem, _, _ = synthetic_problem(classes=4, shots=8)
    selection = select_head(problem, COMMON, candidates=QUICK, progress=False)
    scores = {c.method: c.val_top1 for c in selection.candidates}
    assert list(scores) == list(QUICK) and all(c.error is None for c in selection.candidates)
    assert selection.head.kind == best_method(scores)
    assert scores[selection.head.kind] == max(scores.values())
    assert selection.to_record()["chosen"] == selection.head.kind


def test_a_failing_candidate_is_reported_and_skipped(monkeypatch):
    problem, _, _ = synthetic_problem(classes=4, shots=8)

    def broken(cls, problem, options):
        raise RuntimeError("singular matrix\nsecond line")

    monkeypatch.setattr(GdaHead, "fit", classmethod(broken))
    selection = select_head(problem, COMMON, candidates=QUICK, progress=False)
    failed = next(c for c in selection.candidates if c.method == "gda")
    assert failed.val_top1 is None and failed.error == "RuntimeError: singular matrix"
    assert selection.head.kind != "gda" and len(selection.candidates) == len(QUICK)


def test_auto_fails_only_when_every_candidate_fails(monkeypatch):
    problem, _, _ = synthetic_problem(classes=4, shots=2)
    one_per_class = FewShotProblem(problem.text_weights, problem.logit_scale, problem.train_features[:1, ::2],
                                   problem.train_labels[::2], problem.val_features, problem.val_labels)
    with pytest.raises(ClipedgeError, match="every candidate failed .*gda: ClipedgeError: --method gda") as error:
        select_head(one_per_class, COMMON, candidates=("gda",), progress=False)
    assert "\n" not in str(error.value)
    no_val = FewShotProblem(problem.text_weights, problem.logit_scale, problem.train_features, problem.train_labels)
    with pytest.raises(ClipedgeError, match="needs val images"):
        select_head(no_val, COMMON, candidates=QUICK, progress=False)


@pytest.mark.parametrize("option", ["epochs", "lr", "alpha", "recipe"])
def test_auto_refuses_method_options_but_takes_views(option):
    with pytest.raises(ClipedgeError, match=f"--{option}: --method auto trains every candidate"):
        check_auto_options({option: 1, "views": 3})
    check_auto_options({"views": 3, "epochs": None})


def test_clipedge_train_auto_prints_every_candidate_and_records_them(tmp_path, monkeypatch):
    import clipedge.heads.selection as selection

    monkeypatch.setattr(selection, "CANDIDATES", QUICK)
    data = write_image_folder(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(run), "--method", "auto", "--shots", "3",
                                       "--views", "2", "--backbone", "test-tiny-vit", "--pretrained", "none"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / MANIFEST).read_text())
    record = manifest["auto"]
    assert [c["method"] for c in record["candidates"]] == list(QUICK)
    assert manifest["head"]["kind"] == record["chosen"] and manifest["training"]["method"] == "auto"
    assert manifest["training"]["views"] == 2
    for candidate in record["candidates"]:
        assert candidate["method"] in result.output
    assert "chosen" in result.output
    assert clipedge.evaluate(run, progress=False).method == record["chosen"]
