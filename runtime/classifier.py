"""``Classifier``: an exported clipedge model as a callable from frames to labels.

Thread safety: a Classifier may be shared between threads. Preprocessing runs
in the calling thread; the model call itself is serialised by a per-instance
lock, because a TensorRT execution context and its pinned buffers are not
re-entrant (and one onnxruntime session already uses every core it was
given). For parallel throughput on a GPU, create one Classifier per thread.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from clipedge.errors import ClipedgeError
from clipedge.images import DecodeOptions

from .backends import Backend, open_backend
from .contract import REJECTION_SCORES, RESIZE_MODES, confidence, exif_transpose_of, run_in_batches
from .preprocess import prepare_batch

log = logging.getLogger(__name__)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first. ``label`` is "unknown" when the model's threshold rejects it."""

    labels: tuple[str, ...]
    indices: tuple[int, ...]
    scores: tuple[float, ...]
    rejected: bool = False

    @property
    def label(self) -> str:
        return UNKNOWN if self.rejected else self.labels[0]

    @property
    def index(self) -> int:
        return self.indices[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, **asdict(self)}


class Classifier:
    """Load an exported model and classify frames; see the module docstring for thread safety.

    ``path``: ``.onnx`` (onnxruntime; provider order TensorRT EP, CUDA EP, CPU,
    or ``providers=[...]``; ``threads`` caps its CPU threads) or ``.engine`` /
    ``.plan`` (TensorRT; ``cuda_graph=True`` replays each batch size as a CUDA graph).
    ``bgr=True`` for OpenCV frames. Inputs: a path, a PIL image, an HW/HWC uint8
    array (gray, RGB, RGBA), a list of those, or an NHWC uint8 batch; large
    inputs run in chunks of ``batch_size``. Image files are turned upright by their EXIF orientation when
    the model's training did (its metadata says; ``exif_transpose`` overrides) and refused above
    ``max_image_pixels`` (default: Pillow's limit); arrays and PIL images are used as they are.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, batch_size: int = 32, bgr: bool = False,
                 top_k: int = 5, cuda_graph: bool = False, threads: int | None = None,
                 exif_transpose: bool | None = None, max_image_pixels: int | None = None):
        if batch_size < 1 or top_k < 1:
            raise ClipedgeError(f"batch_size {batch_size}, top_k {top_k}: expected positive numbers")
        self.path, self.bgr, self.top_k = Path(path), bgr, top_k
        self.backend: Backend = open_backend(self.path, providers, threads=threads, cuda_graph=cuda_graph,
                                              max_batch=batch_size)
        self.metadata = self.backend.metadata
        self.image_size = self._image_size()
        self.labels = self._labels()
        self.interpolation = self.metadata.get("interpolation", "bicubic")
        self.resize_mode = self.metadata.get("resize_mode", "shortest")
        if self.resize_mode not in RESIZE_MODES:
            raise ClipedgeError(f"model {self.path}: resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        low, high = self.backend.batch_range
        self.fixed_batch = low if high == low else None
        self.batch_size = self.fixed_batch or (min(batch_size, high) if high else batch_size)
        self.rejection_threshold = float(self.metadata["rejection_threshold"]) if "rejection_threshold" in self.metadata else None
        self.rejection_score = self.metadata.get("rejection_score", "max_prob")
        if self.rejection_score not in REJECTION_SCORES:
            raise ClipedgeError(f"model {self.path}: rejection_score {self.rejection_score!r} is not one of {REJECTION_SCORES}")
        self.temperature = float(self.metadata.get("temperature", 1.0))
        self.decoding = DecodeOptions(exif_transpose_of(self.metadata) if exif_transpose is None else exif_transpose,
                                      max_image_pixels)
        self._lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        """What runs the model, e.g. "onnxruntime:CPUExecutionProvider" or "tensorrt"."""
        return self.backend.name

    def _image_size(self) -> int:
        shape, dtype = self.backend.input_shape, self.backend.input_dtype
        if dtype != "uint8" or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            dims = ", ".join("N" if d is None else str(d) for d in shape)
            raise ClipedgeError(f"model {self.path}: input is {dtype} [{dims}]; expected uint8 [N, S, S, 3] RGB frames "
                                f"(models written by `clipedge export`)")
        if "image_size" in self.metadata:
            return int(self.metadata["image_size"])
        if shape[1] is None:
            raise ClipedgeError(f"model {self.path}: no image_size metadata and a dynamic input size")
        return int(shape[1])

    def _labels(self) -> list[str]:
        count = self.backend.num_classes
        if "class_names" not in self.metadata:
            log.warning("model %s has no clipedge metadata: generic labels class_0, class_1, ...", self.path)
            return [f"class_{i}" for i in range(count or 0)]
        labels = [str(name) for name in json.loads(self.metadata["class_names"])]
        if count is not None and len(labels) != count:
            raise ClipedgeError(f"model {self.path}: metadata names {len(labels)} classes but the model outputs {count}")
        return labels

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (``logits``, ``probs``, ...) for a uint8 [N, S, S, 3] RGB batch, run in chunks."""
        expected = (self.image_size, self.image_size, 3)
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != expected:
            got = f"{batch.dtype} {list(batch.shape)}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ClipedgeError(f"frames: expected uint8 [N, {', '.join(map(str, expected))}], got {got}")
        if not len(batch):
            raise ClipedgeError("frames: got an empty batch")
        with self._lock:  # chunks of batch_size (within the model's range); a short one padded up to its minimum
            return run_in_batches(self.backend.infer, batch, self.batch_size, self.backend.batch_range[0])

    def predict(self, frames: Any, top_k: int | None = None) -> list[Prediction]:
        """Predictions for any accepted input, always as a list (one per image)."""
        batch, _ = prepare_batch(frames, self.image_size, self.interpolation, self.resize_mode, self.bgr, self.decoding)
        return self.decode(self.infer(batch), top_k)

    def decode(self, outputs: dict[str, np.ndarray], top_k: int | None = None) -> list[Prediction]:
        """Top-k labels and rejection from raw outputs."""
        probs = outputs["probs"]
        labels = self.labels if len(self.labels) == probs.shape[1] else [f"class_{i}" for i in range(probs.shape[1])]
        k = min(top_k or self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rejected = (confidence(outputs["logits"], self.rejection_score, self.temperature) < self.rejection_threshold
                    if self.rejection_threshold is not None else np.zeros(len(probs), dtype=bool))
        return [Prediction(tuple(labels[i] for i in row), tuple(int(i) for i in row),
                           tuple(float(probs[n, i]) for i in row), bool(rejected[n])) for n, row in enumerate(order)]

    def __call__(self, frames: Any, top_k: int | None = None) -> Prediction | list[Prediction]:
        """One Prediction for one image, a list for a list or an NHWC batch."""
        batch, single = prepare_batch(frames, self.image_size, self.interpolation, self.resize_mode, self.bgr,
                                      self.decoding)
        predictions = self.decode(self.infer(batch), top_k)
        return predictions[0] if single else predictions

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, backend={self.backend_name!r}, classes={len(self.labels)}, size={self.image_size})"
