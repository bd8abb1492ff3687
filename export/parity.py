"""The parity gate: an exported model must reproduce the PyTorch pipeline on the run's own images.

Two references: the fused PyTorch module (same uint8 input: isolates the
export) and the unfused pipeline a user would have written (open_clip's eval
transform on the image file, ``encode_image``, the head, softmax: checks that
fusion and folding changed nothing). The fused model receives the uint8 image
that open_clip's resize and centre crop produce, so the only difference left
is the graph.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torchvision import transforms as T

from clipedge.backbone import Backbone
from clipedge.errors import ClipedgeError
from clipedge.images import load_rgb
from clipedge.run_dir import Run
from clipedge.run_features import run_data

from .fuse import FusedClassifier

#: precision -> (minimum top-1 agreement, maximum |Δprob|)
TOLERANCES = {"fp32": (1.0, 1e-4), "fp16": (0.99, 1e-2)}
PARITY_IMAGES = 64


@dataclass
class ParityResult:
    images: int
    agreement_fused: float
    max_dprob_fused: float
    agreement_pipeline: float
    max_dprob_pipeline: float
    min_agreement: float
    max_dprob: float

    @property
    def passed(self) -> bool:
        return min(self.agreement_fused, self.agreement_pipeline) >= self.min_agreement and max(
            self.max_dprob_fused, self.max_dprob_pipeline) <= self.max_dprob

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        return (f"top-1 agreement {100 * self.agreement_fused:.2f} % (fused) / {100 * self.agreement_pipeline:.2f} % "
                f"(pipeline), max |Δprob| {self.max_dprob_fused:.2e} / {self.max_dprob_pipeline:.2e} on {self.images} "
                f"images; required ≥ {100 * self.min_agreement:g} % and ≤ {self.max_dprob:g}")


def parity_images(run: Run, count: int = PARITY_IMAGES) -> list[Path]:
    """The run's test images, then val, then train; cycled when the run has fewer than ``count``."""
    data = run_data(run)
    paths = [s.path for split in ("test", "val", "train") for s in data.splits[split]]
    if not paths:
        raise ClipedgeError(f"RUN {run.path}: no images left to check the export against")
    return list(itertools.islice(itertools.cycle(paths), count))


def split_eval_transform(eval_transform: T.Compose) -> tuple[T.Compose, T.Compose]:
    """open_clip's eval transform as (resize + crop → PIL at model size, ToTensor + Normalize)."""
    steps = list(eval_transform.transforms)
    cut = next(i for i, step in enumerate(steps) if isinstance(step, T.ToTensor))
    return T.Compose(steps[:cut]), T.Compose(steps[cut:])


def ort_session(model_bytes: bytes, precision: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if precision == "fp16":
        # onnxruntime's CPU graph fusions crash on fp16 transformer graphs (seen with 1.2x); unfused they run.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(model_bytes: bytes, precision: str, reference: FusedClassifier, backbone: Backbone, run: Run,
                 temperature: float | None, count: int = PARITY_IMAGES, fixed_batch: int | None = None) -> ParityResult:
    to_model_size, to_tensor = split_eval_transform(backbone.eval_transform)
    pil_images = [to_model_size(load_rgb(path)) for path in parity_images(run, count)]
    frames = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in pil_images])
    session = ort_session(model_bytes, precision)
    exported = _run_in_batches(session, frames, fixed_batch or 16, padded=fixed_batch is not None)
    fused = reference(torch.from_numpy(frames))[1].numpy()
    pixels = torch.stack([to_tensor(image) for image in pil_images])
    logits = run.head(backbone.model.encode_image(pixels.to(backbone.device)).float().cpu())
    pipeline = (logits / (temperature or 1.0)).softmax(dim=-1).numpy()
    minimum, maximum = TOLERANCES[precision]

    def agreement(other: np.ndarray) -> float:
        return float((exported.argmax(1) == other.argmax(1)).mean())

    return ParityResult(
        images=len(frames),
        agreement_fused=agreement(fused), max_dprob_fused=float(np.abs(exported - fused).max()),
        agreement_pipeline=agreement(pipeline), max_dprob_pipeline=float(np.abs(exported - pipeline).max()),
        min_agreement=minimum, max_dprob=maximum,
    )


def _run_in_batches(session: ort.InferenceSession, frames: np.ndarray, batch: int, padded: bool) -> np.ndarray:
    """``probs`` for all frames; a fixed-batch model gets its last chunk padded with repeats."""
    outputs = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        count = len(chunk)
        if padded and count < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, axis=0)])
        outputs.append(session.run(["probs"], {"images": chunk})[0][:count])
    return np.concatenate(outputs)
