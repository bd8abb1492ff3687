"""Real-world image files: every decoder failure is that file's problem, C-library noise is summarised, huge
files are refused before they allocate, and animations use their first frame. What a whole run does with such
files is in test_bad_files_in_a_run.py; EXIF orientation in test_exif_orientation.py.

Each failure class is a file crafted byte by byte (bad_image_files.py), the way such files turn up in
hand-collected folders (the exception each one raises was found by decoding them, and Pillow's corpus of fuzzer
findings, with the installed Pillow).
"""

from __future__ import annotations

import errno
import struct
import subprocess
import sys

import numpy as np
import pytest
from bad_image_files import bad_files, encoded
from conftest import make_image
from PIL import Image

from clipedge.core.images import DecodeOptions, UnreadableImage, check_image, load_rgb
from clipedge.runtime.preprocessing.transform import prepare_frame

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

