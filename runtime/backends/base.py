"""The backend interface, after Polygraphy's runners: load once, ``infer`` many uint8 batches, ``close``.

A backend knows nothing about labels or images; it moves a prepared uint8
[N, H, W, 3] batch through the model and returns the named float32 outputs.
Everything the Classifier needs to know about the model (its metadata, input
shape, batch limits, class count) is read from these attributes, so adding a
backend means writing one module that fills them in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """One loaded model, ready to run."""

    #: what actually runs the model, e.g. "onnxruntime:CUDAExecutionProvider" or "tensorrt"
    name: str
    #: the string metadata that travelled with the model (ONNX metadata_props or the engine's sidecar)
    metadata: dict[str, str]
    #: the input tensor's shape; None where a dimension is dynamic
    input_shape: tuple[int | None, ...]
    #: the input tensor's dtype as numpy names it ("uint8" for clipedge models)
    input_dtype: str
    #: the model's outputs, in order ("logits", "probs"[, "embeddings"] for clipedge exports)
    output_names: list[str]
    #: width of the class-score output (contract.score_output) when the model states it, else None
    num_classes: int | None = None
    #: batch sizes the model accepts: (min, max); max is None when unbounded
    batch_range: tuple[int, int | None] = (1, None)

    @abstractmethod
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one contiguous uint8 batch whose size lies within ``batch_range``; float32 outputs by name."""

    def close(self) -> None:
        """Release device memory and sessions; the backend is unusable afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
