"""``clipedge predict`` on large folders: flat memory, output written batch by batch, interruptions keep what was done."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx_models import COLOURS, clipedge_metadata, contract_onnx, plain_classifier_onnx, solid
from PIL import Image

from clipedge.cli import main
from clipedge.cli.predict_output import stream_predictions, walk_files
from clipedge.runtime import Classifier

PER_FOLDER = 100


def many_files(root: Path, count: int) -> Path:
    """``count`` tiny PNGs, 100 to a folder as camera archives keep them, cycling red, green, blue."""
    encoded = []
    for colour in COLOURS:
        path = root / f"{colour}.png"
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(solid(colour, 12, 20)).save(path)
        encoded.append(path.read_bytes())
        path.unlink()
    for i in range(count):
        folder = root / f"day{i // PER_FOLDER:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}_{COLOURS[i % 3]}.png").write_bytes(encoded[i % 3])
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return contract_onnx(tmp_path_factory.mktemp("model") / "model.onnx", clipedge_metadata())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("frames")
    return {count: many_files(root / str(count), count) for count in (400, 2400)}


def test_files_are_walked_in_a_stable_order(tmp_path):
    for name in ("b/2.png", "b/1.png", "a.png", "c.txt", "a/z.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    walked = [(str(path.relative_to(tmp_path)), candidate) for path, candidate in walk_files([tmp_path])]
    assert walked == [("a.png", True), ("c.txt", False), ("a/z.jpg", True), ("b/1.png", True), ("b/2.png", True)]


def test_memory_does_not_grow_with_the_number_of_files(model, folders, tmp_path):
    classifier = Classifier(model, batch_size=16, threads=1)
    peaks = {}
    for count, folder in [(0, folders[400]), *folders.items()]:  # the first run loads decoders: not counted
        out = tmp_path / f"{count}.csv"
        with out.open("w") as stream:
            tracemalloc.start()
            outcome = stream_predictions(classifier, [folder], stream, model, "csv", progress=False)
            peaks[count] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        rows = list(csv.DictReader(out.open()))
        assert outcome.classified == len(rows) == (count or 400) and not outcome.skipped and not outcome.interrupted
        assert all(Path(row["path"]).stem.split("_")[1] == row["label"] for row in rows)
    # Holding the results would take ~1 kB per file (a Path and a Prediction): 2 MB more for 2,000 more files.
    assert peaks[2400] - peaks[400] < 200_000, peaks


def test_output_is_written_while_the_run_goes_on(model, folders, tmp_path, monkeypatch):
    classifier = Classifier(model, batch_size=50, threads=1)
    out = tmp_path / "live.json"
    sizes: list[int] = []
    predict = classifier.predict

    def watched(frames, top_k=None):
        sizes.append(out.stat().st_size)  # what a reader of the file sees before each batch
        return predict(frames, top_k)

    monkeypatch.setattr(classifier, "predict", watched)
    with out.open("w") as stream:
        stream_predictions(classifier, [folders[400]], stream, model, "json", progress=False)
    assert len(sizes) == 8 and sizes[0] == 0 and all(a < b for a, b in zip(sizes, sizes[1:]))
    assert len(json.loads(out.read_text())["predictions"]) == 400


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_interrupted_run_keeps_what_it_did(model, folders, fmt, monkeypatch):
    calls = []
    predict = Classifier.predict

    def interrupted_on_the_third_batch(self, frames, top_k=None):
        calls.append(len(frames))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, frames, top_k)

    monkeypatch.setattr(Classifier, "predict", interrupted_on_the_third_batch)
    flag = {"json": ["--json"], "csv": ["--csv"], "table": []}[fmt]
    result = CliRunner().invoke(main, ["predict", str(model), str(folders[400]), "--batch-size", "10", *flag])
    assert result.exit_code == 130, result.output
    assert "interrupted: the output holds the 20 image(s) classified before" in result.stderr
    if fmt == "json":
        report = json.loads(result.stdout)  # still one valid JSON object
        assert report["interrupted"] is True and len(report["predictions"]) == 20
    elif fmt == "csv":
        assert len(list(csv.DictReader(result.stdout.splitlines()))) == 20
    else:
        assert len(result.stdout.splitlines()) == 2 + 20


def test_sigterm_closes_the_json_output(model, folders, tmp_path):
    """A service manager's SIGTERM arrives mid-run: the file on disk is valid JSON with what was done."""
    script = (
        "import os, signal, sys\n"
        "from clipedge.cli import main\n"
        "from clipedge.runtime import Classifier\n"
        "predict, calls = Classifier.predict, []\n"
        "def terminated_on_the_fourth(self, frames, top_k=None):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 4:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return predict(self, frames, top_k)\n"
        "Classifier.predict = terminated_on_the_fourth\n"
        f"main(['predict', {str(model)!r}, {str(folders[400])!r}, '--json', '--batch-size', '25'])\n"
    )
    out = tmp_path / "out.json"
    with out.open("w") as stdout:
        done = subprocess.run([sys.executable, "-c", script], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    report = json.loads(out.read_text())
    assert report["interrupted"] is True and 75 <= len(report["predictions"]) <= 100


def test_predict_with_labels_for_a_model_from_elsewhere(tmp_path):
    plain = plain_classifier_onnx(tmp_path / "plain.onnx")
    image = tmp_path / "blue.png"
    Image.fromarray(solid("blue", 20, 20)).save(image)
    result = CliRunner().invoke(main, ["predict", str(plain), str(image)])
    assert result.exit_code == 2 and "not a clipedge export (metadata lacks class_names" in result.stderr
    labels = tmp_path / "labels.txt"
    labels.write_text("rouge\nvert\nbleu\n")
    result = CliRunner().invoke(main, ["predict", str(plain), str(image), "--labels", str(labels), "--csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split(",")[:2] == [str(image), "bleu"]
    assert np.isclose(float(result.stdout.splitlines()[1].split(",")[2]), 1.0)
