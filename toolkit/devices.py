"""``--device``: where the backbone and the heads run."""

from __future__ import annotations

import torch

from clipedge.core.errors import ClipedgeError


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipedgeError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ClipedgeError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return device
