"""``Classifier``: an exported clipedge model as a callable from frames to labels.

Thread safety: a Classifier may be shared between threads. Preprocessing runs
in the calling thread; the model call itself is serialised by a per-instance
lock, because a TensorRT execution context and its pinned buffers are not
re-entrant (and one onnxruntime session already uses every core it was
given). For parallel throughput on a GPU, create one Classifier per thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions
from clipedge.runtime.classes.editing import ClassEditing
from clipedge.runtime.classes.model_classes import EMBEDDINGS, ModelClasses, is_adaptable
from clipedge.runtime.classes.readout import probabilities
from clipedge.runtime.preprocessing.boxes import check_boxes, crop_boxes
from clipedge.runtime.preprocessing.frames import prepare_camera_frames
from clipedge.runtime.preprocessing.transform import check_resize_quality, prepare_batch, prepare_whole_frame
from clipedge.runtime.rejection import REJECTION_SCORES, confidence

from .backends import Backend, is_server_url, open_backend
from .contract import (
    RESIZE_MODES,
    class_scores,
    exif_transpose_of,
    frame_input_of,
    max_image_pixels_of,
    missing_contract_keys,
    not_an_export,
    read_labels,
    run_in_batches,
    score_output,
)

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


class Classifier(ClassEditing):
    """Load an exported model and classify frames; see the module docstring for thread safety.

    ``path``: ``.onnx`` (onnxruntime; provider order TensorRT EP, CUDA EP, CPU,
    or ``providers=[...]``; ``threads`` caps its CPU threads) or ``.engine`` /
    ``.plan`` (TensorRT; ``cuda_graph=True`` replays each batch size as a CUDA graph), or a model on a Triton
    server, ``grpc://host:port/NAME`` or ``http://host:port/NAME`` (class names and calibration from its config).
    ``bgr=True`` for OpenCV frames. Inputs: a path, an image file's contents as
    ``bytes`` (decoded exactly as the file: the served ``NAME_encoded`` model
    decodes the same way), a PIL image, an HW/HWC uint8
    array (gray, RGB, RGBA), a list of those, or an NHWC uint8 batch; large
    inputs run in chunks of ``batch_size``. ``resize_quality``: "fast" (default;
    crop first, box-reduce, JPEG draft: a few grey levels from open_clip's
    transform, the export records its parity as ``fast_resize_parity``) or
    "exact" (open_clip's eval transform to the grey level). A ``--frame`` model
    takes frames of exactly its exported size, untouched (runtime.camera_frames).
    ``classifier(frame, boxes=[[x0, y0, x1, y1], ...])`` classifies regions of
    one frame in one batch (runtime.boxes). Image files are turned upright by
    their EXIF orientation when the model's training did (its metadata says;
    ``exif_transpose`` overrides) and refused above ``max_image_pixels``
    (default: the limit the training used, recorded in the metadata, else
    Pillow's); arrays and PIL images are used as they are.

    ``labels`` (a list, or a text file with one name per line) names the classes
    of a model that is not a clipedge export; such a model is accepted only with
    labels and only if it takes uint8 [N, S, S, 3] RGB frames. Its scores are its
    ``probs``/``logits`` output or its only output, taken as logits.

    An adaptable model (``clipedge export RUN --adaptable``) ends at the image embedding and reads its classes
    from the bank beside it (``model.classes.npz``; ``classes=BANK`` for another one, or for a model exported with
    ``--embeddings``): the bank's rows and cache turn embeddings into logits on the host (runtime.classes), then
    softmax, temperature, rejection and Predictions are as for a fused model. ``add_class``, ``remove_class`` and
    ``rename_class`` change the classes in memory at once; ``save_classes`` writes the bank.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, batch_size: int = 32, bgr: bool = False,
                 top_k: int = 5, cuda_graph: bool = False, threads: int | None = None,
                 labels: Sequence[str] | str | Path | None = None, resize_quality: str = "fast",
                 exif_transpose: bool | None = None, max_image_pixels: int | None = None,
                 classes: str | Path | None = None):
        if batch_size < 1 or top_k < 1:
            raise ClipedgeError(f"batch_size {batch_size}, top_k {top_k}: expected positive numbers")
        self.path, self.bgr, self.top_k = path if is_server_url(path) else Path(path), bgr, top_k
        self.backend: Backend = open_backend(self.path, providers, threads=threads, cuda_graph=cuda_graph)
        self.metadata = self.backend.metadata
        self.classes = self._class_bank(classes, providers, threads)
        self.frame = frame_input_of(self.metadata)
        self.resize_quality = check_resize_quality(resize_quality)
        self.image_size = self._image_size()
        self.labels = self._labels(labels)
        self.interpolation = self.metadata.get("interpolation", "bicubic")
        self.resize_mode = self.metadata.get("resize_mode", "shortest")
        if self.resize_mode not in RESIZE_MODES:
            raise ClipedgeError(f"model {self.path}: resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        low, high = self.backend.batch_range
        self.fixed_batch = low if high == low else None
        self.batch_size = self.fixed_batch or (min(batch_size, high) if high else batch_size)
        self.rejection_threshold = float(self.metadata["rejection_threshold"]) if "rejection_threshold" in self.metadata else None
        self.rejection_score = self.metadata.get("rejection_score", "max_prob")
        if self.classes is not None:  # the bank carries the calibration its classes were exported with
            rejection = self.classes.bank.rejection or {}
            self.rejection_threshold = rejection.get("threshold")
            self.rejection_score = rejection.get("score", "max_prob")
        if self.rejection_score not in REJECTION_SCORES:
            raise ClipedgeError(f"model {self.path}: rejection_score {self.rejection_score!r} is not one of {REJECTION_SCORES}")
        self.temperature = self.classes.bank.temperature if self.classes else float(self.metadata.get("temperature", 1.0))
        self.decoding = DecodeOptions(exif_transpose_of(self.metadata) if exif_transpose is None else exif_transpose,
                                      max_image_pixels_of(self.metadata) if max_image_pixels is None else max_image_pixels)
        self._lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        """What runs the model, e.g. "onnxruntime:CPUExecutionProvider" or "tensorrt"."""
        return self.backend.name

    @property
    def input_sample_shape(self) -> tuple[int, ...]:
        """One input sample's shape: (S, S, 3), or the camera frame of a ``--frame`` model."""
        return self.frame.sample_shape if self.frame else (self.image_size, self.image_size, 3)

    def _image_size(self) -> int:
        shape, dtype = self.backend.input_shape, self.backend.input_dtype
        if self.frame is not None:
            if dtype != "uint8" or tuple(shape[1:]) != self.frame.sample_shape:
                raise ClipedgeError(f"model {self.path}: input is {dtype} {list(shape)}, but its metadata declares "
                                    f"{self.frame.describe()} frames")
            return int(self.metadata["image_size"])
        if dtype != "uint8" or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            dims = ", ".join("N" if d is None else str(d) for d in shape)
            raise ClipedgeError(f"model {self.path}: input is {dtype} [{dims}]; expected uint8 [N, S, S, 3] RGB frames "
                                f"(models written by `clipedge export`)")
        if "image_size" in self.metadata:
            return int(self.metadata["image_size"])
        if shape[1] is None:
            raise ClipedgeError(f"model {self.path}: no image_size metadata and a dynamic input size")
        return int(shape[1])

    def _class_bank(self, classes: str | Path | None, providers: list[str] | None,
                    threads: int | None) -> ModelClasses | None:
        """The class bank an adaptable model (or ``classes=``) reads, checked against this model; else None."""
        if classes is None and not is_adaptable(self.metadata):
            return None
        if classes is None and is_server_url(self.path):
            raise ClipedgeError(f"model {self.path}: an adaptable model on a server; give its bank: classes=BANK")
        names = self.backend.output_names
        dim = self.backend.num_classes if names == [EMBEDDINGS] else None
        return ModelClasses(Path(str(self.path)), self.metadata, names, dim, classes, providers, threads)

    def _labels(self, given: Sequence[str] | str | Path | None) -> list[str]:
        """The model's class names (an adaptable model's: its bank's), or the caller's for a model without
        clipedge metadata."""
        if self.classes is not None:
            return list(self.classes.bank.names)
        count = self.backend.num_classes
        if given is not None:
            labels, source = read_labels(given), "labels given"
            if score_output(self.backend.output_names) is None:
                raise ClipedgeError(f"model {self.path}: outputs {', '.join(self.backend.output_names)}; expected "
                                    "logits or probs, or a single [N, C] output of class scores")
        else:
            missing = missing_contract_keys(self.metadata)
            if missing:
                raise ClipedgeError(not_an_export(self.path, missing))
            labels, source = [str(name) for name in json.loads(self.metadata["class_names"])], "metadata"
        if count is not None and len(labels) != count:
            raise ClipedgeError(f"model {self.path}: {source} names {len(labels)} classes but the model outputs {count}")
        return labels

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (``logits``, ``probs``, ...) for a uint8 [N, S, S, 3] RGB batch (a ``--frame`` model: a batch
        of its camera frames), run in chunks."""
        expected = self.input_sample_shape
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.shape[1:] != expected:
            got = f"{batch.dtype} {list(batch.shape)}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ClipedgeError(f"frames: expected uint8 [N, {', '.join(map(str, expected))}], got {got}")
        if not len(batch):
            raise ClipedgeError("frames: got an empty batch")
        with self._lock:  # chunks of batch_size (within the model's range); a short one padded up to its minimum
            outputs = run_in_batches(self.backend.infer, batch, self.batch_size, self.backend.batch_range[0])
        if self.classes is None:
            return class_scores(outputs)
        logits = self.classes.logits(outputs[EMBEDDINGS])
        return {**outputs, "logits": logits, "probs": probabilities(logits, self.temperature)}

    def prepare(self, frames: Any, boxes: Any = None) -> tuple[np.ndarray, bool]:
        """Any accepted input (or one frame and its ``boxes``) → (the model's input batch, whether one image came in)."""
        if boxes is not None:
            if self.frame is not None:
                raise ClipedgeError(f"boxes: model {self.path} takes whole {self.frame.describe()} frames (a --frame "
                                    "export); classify crops with a model exported without --frame")
            whole = prepare_whole_frame(frames, self.decoding)
            crops = crop_boxes(whole, check_boxes(boxes, whole.shape[1], whole.shape[0]))
            bgr = self.bgr and isinstance(frames, np.ndarray)  # files and PIL images decode to RGB
            return prepare_batch(crops, self.image_size, self.interpolation, self.resize_mode, bgr,
                                 self.resize_quality)[0], False
        if self.frame is not None:
            return prepare_camera_frames(frames, self.frame, self.decoding)
        return prepare_batch(frames, self.image_size, self.interpolation, self.resize_mode, self.bgr,
                             self.resize_quality, self.decoding)

    def predict(self, frames: Any, top_k: int | None = None, boxes: Any = None) -> list[Prediction]:
        """Predictions for any accepted input, always as a list (one per image, or per box)."""
        batch, _ = self.prepare(frames, boxes)
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

    def __call__(self, frames: Any, top_k: int | None = None, boxes: Any = None) -> Prediction | list[Prediction]:
        """One Prediction for one image, a list for a list, an NHWC batch, or one frame's ``boxes``."""
        batch, single = self.prepare(frames, boxes)
        predictions = self.decode(self.infer(batch), top_k)
        return predictions[0] if single else predictions

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, backend={self.backend_name!r}, classes={len(self.labels)}, size={self.image_size})"
