"""Real-world image files: every decoder failure is that file's problem, C-library noise is summarised, EXIF
orientation is applied everywhere files are read, huge files are refused before they allocate, and animations
use their first frame.

Each failure class is a file crafted here byte by byte, the way such files turn up in hand-collected folders
(the exception each one raises was found by decoding them, and Pillow's corpus of fuzzer findings, with the
installed Pillow).
"""

from __future__ import annotations

import errno
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_image_files import bad_files, encoded
from cli_checks import validate
from click.testing import CliRunner
from conftest import make_image, write_image_folder
from PIL import Image

import clipedge
from clipedge.cli import main
from clipedge.core.images import DecodeOptions, UnreadableImage, check_image, load_rgb
from clipedge.runtime.preprocessing.transform import prepare_frame

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--views", "1", "--epochs", "1"]


# --- crafted files ------------------------------------------------------------------------------------------------












def add_bad_files(folder: Path, prefix: str = "") -> dict[str, str]:
    """Write every bad file into ``folder``; file name -> expected reason."""
    expected = {}
    for name, (content, reason) in bad_files().items():
        (folder / f"{prefix}{name}").write_bytes(content)
        expected[f"{prefix}{name}"] = reason
    return expected


# --- decoding -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(bad_files()))
def test_each_failure_class_has_its_reason(tmp_path, name):
    content, reason = bad_files()[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage) as raised:
        load_rgb(path)
    assert raised.value.skipped.reason == reason and raised.value.skipped.path == path
    assert name in str(raised.value) and reason in str(raised.value)
    with pytest.raises(UnreadableImage):  # the runtime's fast path (JPEG draft) reads the declared size first
        prepare_frame(path, 32, quality="fast")
    found = check_image(path)
    if name == "truncated.jpg":  # JPEG headers carry no length: only decoding finds the missing half
        assert found is None
    else:
        assert found is not None and found.reason == reason


def test_a_file_is_identified_the_same_whatever_was_opened_before(tmp_path):
    """Pillow 13 registers the plugin of a file's extension first; after a .tga, TGA's lenient header check
    claimed an .ico whose first entry's byte count happens to read as a TGA depth (this one: 90,275 bytes, third
    byte 1), and the icon then failed to load. Each process below starts clean."""
    icon = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 150, 4), dtype=np.uint8), "RGBA")
    png = encoded(icon, "PNG")
    assert len(png) >> 16 == 1  # the case: TGA reads byte 16 of the file as its pixel depth
    ico = tmp_path / "icon.ico"
    ico.write_bytes(struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 150, 150, 0, 0, 1, 32, len(png), 22) + png)
    icon.convert("RGB").save(tmp_path / "first.tga")
    opens = f"from PIL import Image; Image.open({str(tmp_path / 'first.tga')!r}).load()"
    plain = subprocess.run([sys.executable, "-c", f"{opens}; print(Image.open({str(ico)!r}).format)"],
                           capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "TGA"  # the test can tell: Pillow alone misidentifies it
    ours = subprocess.run([sys.executable, "-c", f"{opens}; from clipedge.core.images import load_rgb; "
                                                 f"print(load_rgb({str(ico)!r}).size)"],
                          capture_output=True, text=True, check=True)
    assert ours.stdout.strip() == "(150, 150)"


def test_errors_not_about_the_file_propagate(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    make_image((10, 20, 30), np.random.default_rng(0)).save(good)
    for error in (MemoryError, KeyboardInterrupt, TypeError):
        def fail(*args, error=error, **kwargs):
            raise error("not the file's fault")

        monkeypatch.setattr(Image.Image, "load", fail)
        with pytest.raises(error):
            load_rgb(good)
    monkeypatch.undo()
    assert load_rgb(good).size == (40, 40)


def test_declared_size_is_refused_before_any_pixels_are_allocated(tmp_path):
    """Under an address-space cap far below the pixel buffer, Pillow alone dies of MemoryError; load_rgb refuses
    from the header. A subprocess, because the cap is process-wide."""
    for name in ("huge.png", "large.png"):
        (tmp_path / name).write_bytes(bad_files()[name][0])
    script = f"""
import resource, sys
from pathlib import Path
from PIL import Image
from clipedge.core.images import UnreadableImage, load_rgb
with open("/proc/self/statm") as statm:
    used = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (200 << 20), resource.RLIM_INFINITY))
folder = Path({str(tmp_path)!r})
for name in ("huge.png", "large.png"):
    try:
        load_rgb(folder / name)
    except UnreadableImage as error:
        print(name, error.skipped.reason)
Image.MAX_IMAGE_PIXELS = None
try:
    Image.open(folder / "large.png").load()
except MemoryError:
    print("pillow alone: MemoryError")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["huge.png too-large", "large.png too-large", "pillow alone: MemoryError"]


def test_max_image_pixels_is_configurable(tmp_path):
    path = tmp_path / "photo.png"
    make_image((90, 90, 90), np.random.default_rng(0), size=64).save(path)
    with pytest.raises(UnreadableImage, match=r"too-large: 64x64 = 4,096 pixels, above the limit of 4,000"):
        load_rgb(path, DecodeOptions(max_pixels=4000))
    assert load_rgb(path, DecodeOptions(max_pixels=4096)).size == (64, 64)
    large = tmp_path / "large.png"
    large.write_bytes(bad_files()["large.png"][0])  # 144 MP, above twice Pillow's own limit when raised ...
    with pytest.raises(UnreadableImage) as raised:
        load_rgb(large, DecodeOptions(max_pixels=200_000_000))
    assert raised.value.skipped.reason == "truncated"  # ... is then decoded, and found to lack its pixels
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own setting is left as it was


def test_animations_and_multi_page_files_use_the_first_frame(tmp_path):
    colours = [(250, 0, 0), (0, 0, 250), (0, 250, 0)]
    frames = [Image.new("RGB", (20, 10), colour) for colour in colours]
    for name in ("anim.gif", "anim.png", "anim.webp", "pages.tiff"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:], **({"lossless": True} if name.endswith("webp") else {}))
        with Image.open(path) as image:
            assert getattr(image, "n_frames", 1) == 3, name
        pixel = np.asarray(load_rgb(path))[5, 10]
        assert np.abs(pixel.astype(int) - colours[0]).max() <= 8, (name, pixel)


# --- C-library messages -------------------------------------------------------------------------------------------


def test_errors_about_the_machine_are_not_blamed_on_the_file(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    make_image((10, 20, 30), np.random.default_rng(0)).save(good)

    def too_many_open_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Image, "open", too_many_open_files)
    with pytest.raises(OSError, match="Too many open files"):
        load_rgb(good)
    with pytest.raises(OSError, match="Too many open files"):
        check_image(good)


# --- a whole run --------------------------------------------------------------------------------------------------


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


# --- EXIF orientation ---------------------------------------------------------------------------------------------

#: how to store an upright picture so that a viewer applying EXIF ``orientation`` shows it upright again
