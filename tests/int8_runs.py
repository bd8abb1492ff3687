"""The small run the INT8 tests quantize, and how they judge an INT8 model (where its integer kernels run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_image_folder

import clipedge
from clipedge.export import exporter


def train_int8_run(root: Path) -> Path:
    """A clip-adapter run on the tiny ViT. The fast recipe for 40 epochs: with 5, the random-weight backbone's
    classes are separated by logit margins finer than INT8 resolves, and whether the gate passes depends on the
    platform's rounding (it failed on onnxruntime 1.32)."""
    data = write_image_folder(root / "data", per_class=16)
    run = root / "run"
    clipedge.train(data, run, method="clip-adapter", backbone="test-tiny-vit", pretrained="none", shots=4, views=2,
                   epochs=40, recipe="fast", progress=False)
    return run


def fp32_export(run: Path, folder: Path) -> Path:
    return clipedge.export.export_model(run, folder / "model.onnx", parity_count=8, progress=False).artifact


def cpu_probs(path: Path, frames: np.ndarray) -> np.ndarray:
    return exporter._cpu_probs(path, frames)
