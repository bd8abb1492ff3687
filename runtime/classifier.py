"""``Classifier``: an exported clipedge model as a callable from frames to labels.

Thread safety: one Classifier may be shared between threads; calls are
serialised by a lock (TensorRT contexts and their pinned buffers are not
re-entrant). For parallel throughput, create one Classifier per thread.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.errors import ClipedgeError

from .backends import Backend, open_backend
from .preprocess import chunks, prepare_batch

log = logging.getLogger(__name__)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one image, best first; ``label`` is "unknown" when rejected."""

    labels: tuple[str, ...]
    indices: tuple[int, ...]
    scores: tuple[float, ...]
    rejected: bool = False

    @property
    def label(self) -> str:
        return UNKNOWN if self.rejected else self.labels[0]

    @property
    def score(self) -> float:
        return self.scores[0]


def _softmax_energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    top = scaled.max(axis=1)
    return temperature * (top + np.log(np.exp(scaled - top[:, None]).sum(axis=1)))


class Classifier:
    """Load ``path`` (.onnx → onnxruntime, .engine/.plan → TensorRT) and classify frames.

    ``bgr=True`` for OpenCV frames. ``providers`` overrides onnxruntime's
    provider order (TensorRT EP, CUDA EP, CPU); ``threads`` caps its CPU threads.
    ``cuda_graph`` replays TensorRT engine runs as CUDA graphs. Inputs: a path, a PIL image,
    an HWC/HW uint8 array, a list of those, or an NHWC uint8 batch.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, batch_size: int = 32,
                 bgr: bool = False, top_k: int = 5, cuda_graph: bool = False, threads: int | None = None):
        path = Path(path)
        if not path.exists():
            raise ClipedgeError(f"model {path}: no such file")
        self.path, self.bgr, self.top_k = path, bgr, top_k
        self.backend: Backend = open_backend(path, providers, threads=threads, cuda_graph=cuda_graph)
        metadata = self.backend.metadata
        self.labels = self._labels(metadata)
        self.image_size = self._image_size(metadata)
        self.interpolation = metadata.get("interpolation", "bicubic")
        low, high = self.backend.batch_range
        self.fixed_batch = low if high == low else None
        self.batch_size = self.fixed_batch or (min(batch_size, high) if high else batch_size)
        self.rejection_score = metadata.get("rejection_score")
        self.rejection_threshold = float(metadata["rejection_threshold"]) if "rejection_threshold" in metadata else None
        self.temperature = float(metadata.get("temperature", 1.0))
        self._lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def _labels(self, metadata: dict[str, str]) -> list[str]:
        if "class_names" in metadata:
            return list(json.loads(metadata["class_names"]))
        log.warning("model %s has no clipedge metadata: using generic labels class_0, class_1, ...", self.path)
        return []

    def _image_size(self, metadata: dict[str, str]) -> int:
        if "image_size" in metadata:
            return int(metadata["image_size"])
        shape = getattr(self.backend, "session", None).get_inputs()[0].shape if hasattr(self.backend, "session") else None
        if shape and isinstance(shape[1], int):
            return int(shape[1])
        raise ClipedgeError(f"model {self.path}: cannot tell the input image size (no metadata, dynamic shape)")

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a prepared uint8 [N, S, S, 3] batch, chunked to the model's batch size."""
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (self.image_size, self.image_size, 3):
            raise ClipedgeError(
                f"frames: expected uint8 [N, {self.image_size}, {self.image_size}, 3], got {batch.dtype} {list(batch.shape)}"
            )
        parts: list[dict[str, np.ndarray]] = []
        with self._lock:
            for chunk in chunks(batch, self.batch_size):
                count = len(chunk)
                if self.fixed_batch and count < self.fixed_batch:  # pad a fixed-batch model's last chunk
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - count, axis=0)])
                outputs = self.backend.infer(chunk)
                parts.append({k: v[:count] for k, v in outputs.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _rejected(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.rejection_threshold is None:
            return np.zeros(len(outputs["probs"]), dtype=bool)
        if self.rejection_score == "energy":
            score = _softmax_energy(outputs["logits"], self.temperature)
        else:
            score = outputs["probs"].max(axis=1)
        return score < self.rejection_threshold

    def __call__(self, frames: Any, top_k: int | None = None) -> Prediction | list[Prediction]:
        batch, single = prepare_batch(frames, self.image_size, self.interpolation, self.bgr)
        outputs = self.infer(batch)
        probs = outputs["probs"]
        k = min(top_k or self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = self.labels or [f"class_{i}" for i in range(probs.shape[1])]
        rejected = self._rejected(outputs)
        predictions = [
            Prediction(tuple(names[i] for i in row), tuple(int(i) for i in row),
                       tuple(float(probs[n, i]) for i in row), bool(rejected[n]))
            for n, row in enumerate(order)
        ]
        return predictions[0] if single else predictions

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
