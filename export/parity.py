"""The parity gate: an exported model must reproduce the PyTorch pipeline on the run's own images.

Two references: the fused PyTorch module in fp32 (same uint8 input: isolates
the export and, for fp16, the precision loss) and the unfused pipeline a user
would have written (open_clip's eval transform on the image file,
``encode_image``, the head, softmax: checks that fusion and folding changed
nothing). The exported model receives the uint8 image that open_clip's resize
and centre crop produce from the same file, so the only difference left is
the graph.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from clipedge.backbone import Backbone
from clipedge.errors import ClipedgeError
from clipedge.images import UnreadableImage, load_rgb
from clipedge.run_dir import Run, record_skipped
from clipedge.run_features import run_data, run_decoding
from clipedge.runtime.backends import Backend
from clipedge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from clipedge.runtime.contract import run_in_batches
from torchvision import transforms as T

from .fuse import FusedClassifier

#: precision -> (minimum top-1 agreement, maximum |Δprob| at temperature 1; None: reported, not gated).
#: INT8 moves probabilities by up to a few 1e-2 by design, so only its decisions are gated (issue: ≥ 98 %).
TOLERANCES: dict[str, tuple[float, float | None]] = {"fp32": (1.0, 1e-4), "fp16": (0.99, 1e-2), "int8": (0.98, None)}
PARITY_IMAGES = 64
REFERENCE_BATCH = 16

#: uint8 frames [N, H, W, 3] -> probs [N, C], the exported model under test
ProbsFunction = Callable[[np.ndarray], np.ndarray]


@dataclass
class ParityReference:
    """The frames an export is checked on and the two PyTorch answers for them."""

    frames: np.ndarray
    fused: np.ndarray
    pipeline: np.ndarray


@dataclass
class ParityResult:
    images: int
    agreement_fused: float
    max_dprob_fused: float
    agreement_pipeline: float
    max_dprob_pipeline: float
    min_agreement: float
    max_dprob: float | None

    @property
    def agreement(self) -> float:
        return min(self.agreement_fused, self.agreement_pipeline)

    @property
    def dprob(self) -> float:
        return max(self.max_dprob_fused, self.max_dprob_pipeline)

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement and (self.max_dprob is None or self.dprob <= self.max_dprob)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        required = f"≥ {100 * self.min_agreement:g} %" + (f" and ≤ {self.max_dprob:.3g}" if self.max_dprob is not None else "")
        return (f"top-1 agreement {100 * self.agreement_fused:.2f} % (fused) / {100 * self.agreement_pipeline:.2f} % "
                f"(pipeline), max |Δprob| {self.max_dprob_fused:.2e} / {self.max_dprob_pipeline:.2e} on {self.images} "
                f"images; required {required}")


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


@contextmanager
def exact_fp32() -> Iterator[None]:
    """No TF32 on the GPU while references run: it rounds fp32 matmuls and convs to 10 mantissa bits (~1e-3)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
@exact_fp32()
def reference_outputs(run: Run, backbone: Backbone, fused: FusedClassifier, temperature: float | None,
                      paths: list[Path]) -> ParityReference:
    """Probabilities of the fp32 fused module and of the unfused pipeline on the images at ``paths``, decoded as
    the run was; a file that no longer decodes is left out and recorded in the run's skipped.json."""
    to_model_size, to_tensor = split_eval_transform(backbone.eval_transform)
    pil_images = [to_model_size(image) for image in _decoded(run, paths)]
    frames = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in pil_images])
    fused_probs, pipeline_probs = [], []
    for start in range(0, len(frames), REFERENCE_BATCH):
        chunk = frames[start : start + REFERENCE_BATCH]
        fused_probs.append(fused(torch.from_numpy(chunk).to(fused.device))[1].cpu())
        pixels = torch.stack([to_tensor(image) for image in pil_images[start : start + REFERENCE_BATCH]])
        logits = run.head(backbone.encode_images(pixels))
        pipeline_probs.append((logits / (temperature or 1.0)).softmax(dim=-1))
    return ParityReference(frames, torch.cat(fused_probs).numpy(), torch.cat(pipeline_probs).numpy())


def _decoded(run: Run, paths: list[Path]) -> list:
    decoding, images, unreadable = run_decoding(run), [], {}
    for path in paths:
        if path in unreadable:
            continue
        try:
            images.append(load_rgb(path, decoding))
        except UnreadableImage as error:
            unreadable[path] = error.skipped
    record_skipped(run.path, list(unreadable.values()), "export")
    if not images:
        raise ClipedgeError(f"RUN {run.path}: none of the {len(paths)} image(s) to check the export against decodes")
    return images


def compare(exported: np.ndarray, reference: ParityReference, precision: str, temperature: float | None = None,
            min_agreement: float | None = None) -> ParityResult:
    """Top-1 agreement and max |Δprob| of ``exported`` against both references, with the precision's tolerance.

    A calibrated temperature T < 1 sharpens the softmax, which multiplies every logit error by 1/T on its
    way into the probabilities; the |Δprob| bound is widened by the same factor, so the requirement on the
    logits stays what it is at T = 1. ``min_agreement`` overrides the precision's agreement bound.
    """
    minimum, maximum = TOLERANCES[precision]
    if min_agreement is not None:
        minimum = min_agreement
    if maximum is not None and temperature:
        maximum /= min(temperature, 1.0)

    def agreement(other: np.ndarray) -> float:
        return float((exported.argmax(1) == other.argmax(1)).mean())

    return ParityResult(
        images=len(exported),
        agreement_fused=agreement(reference.fused), max_dprob_fused=float(np.abs(exported - reference.fused).max()),
        agreement_pipeline=agreement(reference.pipeline),
        max_dprob_pipeline=float(np.abs(exported - reference.pipeline).max()),
        min_agreement=minimum, max_dprob=maximum,
    )


def backend_probs(backend: Backend, frames: np.ndarray) -> np.ndarray:
    """``probs`` of a runtime backend over all frames, in the chunks its batch range accepts."""
    low, high = backend.batch_range
    return run_in_batches(backend.infer, frames, high or REFERENCE_BATCH, low)["probs"]


def onnxruntime_probs(model_path: Path, device: str) -> ProbsFunction:
    """The exported ONNX through the runtime's own onnxruntime backend (what users run): the CUDA provider when
    checking on a GPU, without TF32 (fp32 parity needs true fp32), else the CPU."""
    import onnxruntime as ort

    use_cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    providers: list = [("CUDAExecutionProvider", {"use_tf32": "0"})] if use_cuda else []
    backend = OnnxRuntimeBackend(model_path, [*providers, "CPUExecutionProvider"], threads=torch.get_num_threads())
    return lambda frames: backend_probs(backend, frames)
