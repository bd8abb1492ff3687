"""The backend interface (after Polygraphy's runners): load once, then ``infer`` uint8 batches."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """One loaded model. ``infer`` takes uint8 [N, H, W, 3] and returns named float32 outputs."""

    #: what actually runs the model, e.g. "onnxruntime:CUDAExecutionProvider" or "tensorrt"
    name: str
    #: string metadata that travelled with the model (class names, image size, ...)
    metadata: dict[str, str]
    #: batch sizes the model accepts: (min, max); max is None when unbounded
    batch_range: tuple[int, int | None] = (1, None)

    @abstractmethod
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; the batch size is within ``batch_range``."""

    def close(self) -> None:
        """Release device resources; the backend is unusable afterwards."""
