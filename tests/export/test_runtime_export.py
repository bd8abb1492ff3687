"""The runtime on models written by ``clipedge export``: agreement with ``clipedge eval``, calibration, bench vs torch."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.cli import main
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.bench.soak import mixed_frames, soak


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-export")
    data = write_image_folder(root / "data", per_class=14)
    run = root / "run"
    clipedge.train(data, run, method="tip-adapter", backbone="test-tiny-vit", pretrained="none", shots=4, views=2,
                   progress=False)
    return run, data


@pytest.fixture(scope="module")
def exported(run_and_data):
    run, _ = run_and_data
    return export_model(run, parity_count=16).artifact


def _agreement(classifier: Classifier, report) -> float:
    root = Path(report.data)
    predictions = classifier.predict([root / p["path"] for p in report.predictions])
    return float(np.mean([ours.index == theirs["predicted"] for ours, theirs in zip(predictions, report.predictions)]))


def test_runtime_agrees_with_clipedge_eval(run_and_data, exported):
    run, _ = run_and_data
    report = clipedge.evaluate(run, progress=False)
    assert len(report.predictions) >= 12
    classifier = Classifier(exported)
    assert classifier.labels == ["blue", "green", "red"] and classifier.image_size == 32
    assert classifier.metadata["precision"] == "fp32"
    assert _agreement(classifier, report) >= 0.995


def test_fp16_model_runs_on_the_cpu_and_agrees(run_and_data, tmp_path):
    run, _ = run_and_data
    fp16 = export_model(run, tmp_path / "model.fp16.onnx", fp16=True, parity_count=16).artifact
    classifier = Classifier(fp16)  # onnxruntime's fused CPU kernels would crash on this graph: the backend avoids them
    assert classifier.metadata["precision"] == "fp16"
    assert _agreement(classifier, clipedge.evaluate(run, progress=False)) >= 0.99


def test_calibrated_model_rejects_as_calibration_decided(run_and_data, tmp_path):
    torch = pytest.importorskip("torch")
    from clipedge.calibration.rejection import confidence_score

    run, data = run_and_data
    calibrated = tmp_path / "run"
    shutil.copytree(run, calibrated)
    from clipedge.calibration.calibrate import calibrate

    calibrate(calibrated, progress=False, force_threshold=True)  # applied whatever this run's held-out AUROC
    manifest = json.loads((calibrated / "clipedge.json").read_text())["calibration"]
    artifact = export_model(calibrated, parity_count=16).artifact  # a failing export of a calibrated run fails here
    classifier = Classifier(artifact)
    assert classifier.temperature == pytest.approx(manifest["temperature"])
    assert classifier.rejection_threshold == pytest.approx(manifest["threshold"])
    assert classifier.rejection_score == manifest["rejection_score"]
    frames, _ = classifier_batch(classifier, sorted(data.rglob("*.png")))
    outputs = classifier.infer(frames)
    scores = confidence_score(torch.from_numpy(outputs["logits"]), manifest["rejection_score"], manifest["temperature"])
    expected = (scores < manifest["threshold"]).numpy()
    assert [p.rejected for p in classifier.decode(outputs)] == expected.tolist()


def classifier_batch(classifier: Classifier, paths: list[Path]) -> tuple[np.ndarray, list[Path]]:
    from clipedge.runtime.preprocessing.transform import prepare_batch

    return prepare_batch(paths, classifier.image_size, classifier.interpolation, classifier.resize_mode)[0], paths


def test_predict_command_on_the_runs_test_images(run_and_data, exported):
    run, _ = run_and_data
    report = clipedge.evaluate(run, progress=False)
    root = Path(report.data)
    result = CliRunner().invoke(main, ["predict", str(exported), *[str(root / p["path"]) for p in report.predictions],
                                       "--json", "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    predicted = [p["indices"][0] for p in json.loads(result.stdout)["predictions"]]
    assert np.mean([a == b["predicted"] for a, b in zip(predicted, report.predictions)]) >= 0.995


def test_bench_compares_with_torch(run_and_data, exported):
    run, _ = run_and_data
    result = CliRunner().invoke(main, ["bench", str(exported), "--batch", "1,4", "--iters", "3", "--warmup", "1",
                                       "--threads", "2", "--compare-torch", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["torch_run"] == str(run) and [entry["batch"] for entry in report["results"]] == [1, 4]
    for entry in report["results"]:
        for backend in ("runtime", "torch"):
            assert {"p50_ms", "p99_ms", "images_per_s"} <= set(entry[backend])
        assert entry["speedup_p50"] == pytest.approx(entry["torch"]["p50_ms"] / entry["runtime"]["p50_ms"])
        assert entry["speedup_throughput"] == pytest.approx(entry["runtime"]["images_per_s"] / entry["torch"]["images_per_s"])


# --- long runs and threads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 8])
def test_soak_memory_stays_flat_and_answers_do_not_drift(exported, batch):
    """The suite's short soak (benchmarks/soak.py runs 100,000 frames): mixed sizes and layouts, RSS after warm-up."""
    classifier = Classifier(exported, threads=1)
    frames = mixed_frames(classifier.image_size, sizes=((40, 56), (9, 13), (70, 30)))
    report = soak(classifier, 2400, batch, frames, warmup=400)
    assert report.frames == 2400 and report.differing_calls == 0, report
    assert report.rss_max_growth_mb <= 10, report


def test_threads_give_the_single_threaded_answers(exported):
    """N threads sharing one Classifier, and N Classifiers in N threads, answer exactly as one thread does."""
    frames = mixed_frames(32, seed=1, sizes=((40, 56), (9, 13)))
    batches = [frames[i : i + 4] for i in range(0, len(frames), 4)]

    def probs(classifier: Classifier) -> list[np.ndarray]:
        return [np.array([p.scores for p in classifier.predict(batch, top_k=3)]) for batch in batches * 3]

    expected = probs(Classifier(exported, threads=1))
    shared = Classifier(exported, threads=1)
    with ThreadPoolExecutor(4) as pool:
        from_shared = list(pool.map(lambda _: probs(shared), range(4)))
        from_own = list(pool.map(lambda _: probs(Classifier(exported, threads=1)), range(4)))
    for outcome in from_shared + from_own:
        assert all(np.array_equal(a, b) for a, b in zip(outcome, expected))
