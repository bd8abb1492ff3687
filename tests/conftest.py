"""Shared fixtures: tiny open_clip architectures and small generated image folders.

Nothing here downloads: the tiny configs are registered with open_clip in this
process and built with random weights (``--pretrained none``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    "test-tiny-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": TINY_TEXT,
    },
    "test-tiny-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": TINY_TEXT,
    },
}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(autouse=True)
def logging_as_it_was():
    """CliRunner runs commands in this process, and a command configures logging for the process (``clipedge -v``
    puts the root logger at DEBUG): put it back, so one test's verbosity does not reach the next (Pillow's
    per-chunk debug records then filled the memory test's measurement)."""
    root = logging.getLogger()
    root_level = root.level  # its handlers are pytest's, added and removed per test phase: left to pytest
    ours = [logging.getLogger(name) for name in ("clipedge", "py.warnings")]
    saved = [(logger, logger.level, logger.handlers[:], logger.propagate) for logger in ours]
    yield
    root.setLevel(root_level)
    for logger, level, handlers, propagate in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture(scope="session", autouse=True)
def tiny_open_clip_configs():
    from clipedge.backbone import register_model_config

    for name, config in TINY_CONFIGS.items():
        register_model_config(name, config)
    warnings.filterwarnings("ignore", message=".*random weights.*")
    return TINY_CONFIGS


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy colour patch with a random brighter square: distinct classes, varied images."""
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    x, y = rng.integers(0, size // 2, 2)
    pixels[y : y + size // 3, x : x + size // 3] += 40
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_image_folder(root: Path, per_class: int = 12, seed: int = 0, classes=COLOURS) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(colour, rng).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data")


@pytest.fixture
def model(tmp_path) -> Path:
    """A small ONNX model honouring the export contract (tests/onnx_models.py): red, green, blue by mean colour."""
    from onnx_models import clipedge_metadata, contract_onnx

    return contract_onnx(tmp_path / "model.onnx", clipedge_metadata())


@pytest.fixture
def frames_folder(tmp_path) -> Path:
    """Frames of each contract colour in a folder, with a nested image, a text file and a broken PNG."""
    from onnx_models import COLOURS, solid

    folder = tmp_path / "frames"
    (folder / "nested").mkdir(parents=True)
    for i, colour in enumerate(COLOURS):
        Image.fromarray(solid(colour, 30, 40)).save(folder / f"{i}_{colour}.png")
    Image.fromarray(solid("green", 24, 24)).save(folder / "nested" / "g.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    return folder

