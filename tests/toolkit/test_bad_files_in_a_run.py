"""Bad image files in a whole run: training completes and lists each with its reason, split.json leaves them out,
and eval, export, calibrate, INT8 calibration sampling and predict never decode a file that was skipped; the
runtime applies the pixel limit its training recorded. The files themselves are crafted in bad_image_files.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_image_files import bad_files
from cli_checks import validate
from click.testing import CliRunner
from conftest import make_image, write_image_folder
from PIL import Image

import clipedge
from clipedge.cli import main
from clipedge.core.images import UnreadableImage

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--views", "1", "--epochs", "1"]


def add_bad_files(folder: Path, prefix: str = "") -> dict[str, str]:
    """Write every bad file into ``folder``; file name -> expected reason."""
    expected = {}
    for name, (content, reason) in bad_files().items():
        (folder / f"{prefix}{name}").write_bytes(content)
        expected[f"{prefix}{name}"] = reason
    return expected


def test_methods_without_augmentation_leave_failed_files_out_of_the_split(tmp_path):
    """zero-shot (like linear-probe's official recipe) encodes training images with the eval transform: a file
    that fails there is recorded and left out of split.json as with augmented views."""
    data = write_image_folder(tmp_path / "data", per_class=6)
    broken = bad_files()["truncated.jpg"][0]  # passes the scan's header check, fails to decode
    classes = sorted(folder for folder in data.iterdir() if folder.is_dir())
    for folder in classes:
        (folder / "broken.jpg").write_bytes(broken)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), "--method", "zero-shot",
                                       "--backbone", "test-tiny-vit", "--pretrained", "none"])
    assert result.exit_code == 0, result.output
    listed = {Path(row[0]).name for rows in json.loads((tmp_path / "run" / "split.json").read_text()).values()
              for row in rows}
    assert "broken.jpg" not in listed
    entries = json.loads((tmp_path / "run" / "skipped.json").read_text())["files"]
    assert sorted(Path(e["path"]).parent.name for e in entries) == [folder.name for folder in classes]
    assert {e["reason"] for e in entries} == {"truncated"}


def skipped_reasons(run: Path) -> dict[str, str]:
    return {Path(entry["path"]).name: entry["reason"] for entry in json.loads((run / "skipped.json").read_text())["files"]}


@pytest.fixture(scope="module")
def run_with_bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-files")
    data = write_image_folder(root / "data", per_class=10)
    expected = {**add_bad_files(data / "red", "red_"), **add_bad_files(data / "green", "green_")}
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(root / "run"), "--shots", "16", *TINY])
    return root / "run", data, expected, result


def test_training_completes_and_lists_every_bad_file(run_with_bad_files):
    run, _, expected, result = run_with_bad_files
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert skipped_reasons(run) == expected
    manifest = json.loads((run / "clipedge.json").read_text())
    assert manifest["data"]["skipped_files"] == len(expected) and manifest["data"]["skipped_list"] == "skipped.json"
    assert manifest["decoding"] == {"exif_transpose": True, "max_image_pixels": Image.MAX_IMAGE_PIXELS}
    stages = {Path(e["path"]).name: e["stage"] for e in json.loads((run / "skipped.json").read_text())["files"]}
    assert stages["red_truncated.jpg"] == "features" and stages["red_empty.png"] == "scan"
    listed = {Path(row[0]).name for rows in json.loads((run / "split.json").read_text()).values() for row in rows}
    assert not listed & set(expected), "split.json must not list a file that failed to decode"


def test_later_steps_never_decode_a_skipped_file(run_with_bad_files, monkeypatch):
    """eval, export (its parity gate), calibrate and INT8 calibration sampling complete; none decodes a file that
    training skipped. A test image damaged after training (a truncated JPEG met by the parity gate) is
    skipped by the first step that decodes it, recorded, and never decoded again."""
    from PIL import ImageFile

    from clipedge.calibration.int8_images import calibration_images

    run, data, expected, _ = run_with_bad_files
    victim = data / json.loads((run / "split.json").read_text())["test"][0][0]
    original_bytes = victim.read_bytes()
    decoded: list[Path] = []
    original_load = ImageFile.ImageFile.load

    def spy(image):
        decoded.append(Path(image.filename).resolve())
        return original_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    runner = CliRunner()
    try:
        victim.write_bytes(bad_files()["truncated.jpg"][0])
        for args in (["export", str(run), "--out", str(run / "m.onnx")], ["eval", str(run)], ["calibrate", str(run)]):
            result = runner.invoke(main, args)
            assert result.exit_code == 0, (args, result.output)
        calibration_images(clipedge.load_run(run), count=8)
    finally:
        victim.write_bytes(original_bytes)
    assert decoded and not {path.name for path in decoded} & set(expected)
    assert decoded.count(victim.resolve()) == 1
    entry = [e for e in json.loads((run / "skipped.json").read_text())["files"] if Path(e["path"]) == victim]
    assert entry and entry[0]["reason"] == "truncated" and entry[0]["stage"] == "export"


def test_eval_on_a_folder_and_int8_calibration_folder_skip_with_reasons(run_with_bad_files):
    run, data, expected, _ = run_with_bad_files
    result = CliRunner().invoke(main, ["eval", str(run), str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]} == expected
    validate(report, "eval")
    validate(json.loads((run / "clipedge.json").read_text()), "manifest")
    from clipedge.calibration.int8_images import calibration_images

    images = calibration_images(clipedge.load_run(run), data, count=100)
    assert images.skipped == len(expected)
    assert len(images.calibration) + len(images.selection) == 30


def test_predict_skips_each_failure_class_with_its_reason(tmp_path):
    from onnx_models import clipedge_metadata, contract_onnx

    folder = tmp_path / "frames"
    folder.mkdir()
    expected = add_bad_files(folder)
    make_image((200, 30, 30), np.random.default_rng(1)).save(folder / "red.png")
    model = contract_onnx(tmp_path / "model.onnx", clipedge_metadata())
    result = CliRunner().invoke(main, ["predict", str(model), str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    validate(report, "predict")
    assert [Path(p["path"]).name for p in report["predictions"]] == ["red.png"]
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]} == expected
    assert f"skipped {len(expected)} file(s)" in result.stderr and "bc7.dds (unsupported)" in result.stderr
    assert "decoder warnings" not in result.stderr  # a skipped file is reported by its reason alone


def test_the_runtime_applies_the_pixel_limit_its_training_recorded(tmp_path):
    from onnx_models import clipedge_metadata, contract_onnx

    from clipedge.runtime import Classifier

    path = tmp_path / "photo.png"
    make_image((200, 30, 30), np.random.default_rng(1), size=64).save(path)  # 4,096 pixels
    model = contract_onnx(tmp_path / "model.onnx", clipedge_metadata(max_image_pixels="4000"))
    with pytest.raises(UnreadableImage, match="too-large"):
        Classifier(model)(path)
    assert Classifier(model, max_image_pixels=5000)(path).label  # an explicit limit overrides the recorded one


def test_predict_json_lists_the_reasons_when_no_file_decodes(tmp_path):
    from onnx_models import clipedge_metadata, contract_onnx

    folder = tmp_path / "frames"
    folder.mkdir()
    expected = add_bad_files(folder)
    model = contract_onnx(tmp_path / "model.onnx", clipedge_metadata())
    result = CliRunner().invoke(main, ["predict", str(model), str(folder), "--json"])
    assert result.exit_code == 2 and "no readable images" in result.stderr and "Traceback" not in result.output
    report = json.loads(result.stdout)  # still one complete document, for the program reading it
    assert report["predictions"] == [] and report["skipped"] == len(expected)
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]} == expected
