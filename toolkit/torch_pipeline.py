"""The PyTorch eager pipeline an exported model replaces, for ``clipedge bench --compare-torch``.

It does what a user would write without clipedge's export: normalise the
uint8 frames as tensors, ``encode_image``, the head, softmax, in eager mode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .backbone import load_backbone_from_spec
from .run_dir import load_run


def eager_pipeline(run_path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    if threads:
        torch.set_num_threads(threads)
    run = load_run(run_path)
    backbone = load_backbone_from_spec(run.backbone_spec)
    spec = run.backbone_spec
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    temperature = (run.manifest.get("calibration") or {}).get("temperature") or 1.0

    @torch.inference_mode()
    def classify(frames: np.ndarray) -> np.ndarray:
        pixels = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
        logits = run.head(backbone.model.encode_image(pixels).float())
        return (logits / temperature).softmax(dim=-1).numpy()

    return classify
