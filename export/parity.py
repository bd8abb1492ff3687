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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from clipedge.backbone import Backbone
from clipedge.core.errors import ClipedgeError
from clipedge.core.images import UnreadableImage, load_rgb
from clipedge.run_dir import Run, read_skipped, record_skipped
from clipedge.run_features import run_data, run_decoding
from clipedge.runtime.backends import Backend
from clipedge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from clipedge.runtime.contract import FrameInput, ReferenceSet, run_in_batches
from clipedge.runtime.preprocessing.nv12 import nv12_to_rgb, rgb_to_nv12

from .fuse import FusedClassifier
from .options import PARITY_IMAGES

#: precision -> (minimum top-1 agreement, maximum |Δprob| at temperature 1; None: reported, not gated).
#: INT8 moves probabilities by up to a few 1e-2 by design, so only its decisions are gated (≥ 98 %).
TOLERANCES: dict[str, tuple[float, float | None]] = {"fp32": (1.0, 1e-4), "fp16": (0.99, 1e-2), "int8": (0.98, None)}
#: frames embedded in the ONNX for the engine gate on the device: a few, since they travel in every model file
REFERENCE_SET_IMAGES = 8
REFERENCE_BATCH = 16

#: uint8 frames [N, H, W, 3] -> probs [N, C], the exported model under test
ProbsFunction = Callable[[np.ndarray], np.ndarray]


@dataclass
class ParityReference:
    """The frames an export is checked on and the two PyTorch answers for them."""

    frames: np.ndarray
    fused: np.ndarray
    pipeline: np.ndarray
    #: the image files the frames were made of (those of the requested ones that decoded)
    paths: list[Path] = field(default_factory=list)


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
    """Up to ``count`` distinct images of the run: test first, then val, then train. A small run is checked on all
    of its images once (repeating them would add no evidence, only a larger image count to report)."""
    data = run_data(run)
    paths = [s.path for split in ("test", "val", "train") for s in data.splits[split]]
    if not paths:
        raise ClipedgeError(f"RUN {run.path}: no images left to check the export against")
    return paths[:count]


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
    images = decoded_images(run, paths)
    reference = image_reference(run, backbone, fused, temperature, list(images.values()))
    return replace(reference, paths=list(images))


@torch.no_grad()
@exact_fp32()
def image_reference(run: Run, backbone: Backbone, fused: FusedClassifier, temperature: float | None,
                    images: list[Image.Image]) -> ParityReference:
    """Both references on PIL images of any size; ``frames`` are the model-size frames open_clip's resize and
    crop made of them (what a model-size export is fed)."""
    to_model_size, to_tensor = split_eval_transform(backbone.eval_transform)
    pil_images = [to_model_size(image) for image in images]
    frames = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in pil_images])
    fused_probs, pipeline_probs = [], []
    for start in range(0, len(frames), REFERENCE_BATCH):
        chunk = frames[start : start + REFERENCE_BATCH]
        fused_probs.append(fused(torch.from_numpy(chunk).to(fused.device))[1].cpu())
        pixels = torch.stack([to_tensor(image) for image in pil_images[start : start + REFERENCE_BATCH]])
        logits = run.head(backbone.encode_images(pixels))
        pipeline_probs.append((logits / (temperature or 1.0)).softmax(dim=-1))
    return ParityReference(frames, torch.cat(fused_probs).numpy(), torch.cat(pipeline_probs).numpy())


def decoded_images(run: Run, paths: list[Path]) -> dict[Path, Image.Image]:
    """The images at ``paths`` decoded as the run's training decoded them (EXIF orientation, size limit), by
    path; one that fails is recorded in the run's skipped.json, and the gate goes on with the rest."""
    decoding, images, unreadable = run_decoding(run), {}, {}
    recorded = {Path(entry["path"]) for entry in read_skipped(run.path)}  # by an earlier step, or gate, of this run
    for path in paths:
        if path in recorded or path in unreadable or path in images:
            continue
        try:
            images[path] = load_rgb(path, decoding)
        except UnreadableImage as error:
            unreadable[path] = error.skipped
    record_skipped(run.path, list(unreadable.values()), "export")
    if not images:
        raise ClipedgeError(f"RUN {run.path}: none of the {len(paths)} image(s) to check the export against decodes")
    return images


def camera_frame(image: Image.Image, frame: FrameInput) -> tuple[np.ndarray, Image.Image]:
    """One of the run's images as a camera would deliver it at ``frame``'s size and pixel format (the model's
    input), and the RGB picture the PIL pipeline sees in that frame (for NV12: after the integer decoding)."""
    rgb = np.asarray(image.resize((frame.width, frame.height), Image.Resampling.BICUBIC))
    if frame.pixel_format == "nv12":
        planes = rgb_to_nv12(rgb, frame.colour_matrix or "bt601")
        return planes, Image.fromarray(nv12_to_rgb(planes, frame.colour_matrix or "bt601"))
    model_input = np.ascontiguousarray(rgb[..., ::-1]) if frame.pixel_format == "bgr" else rgb
    return model_input, Image.fromarray(rgb)


def frame_reference_outputs(run: Run, backbone: Backbone, fused: FusedClassifier, temperature: float | None,
                            paths: list[Path], frame: FrameInput) -> ParityReference:
    """The references of a ``--frame`` export: the run's images placed in camera frames of that size, the
    frames fed to the export as they are and to both references through the PIL pipeline."""
    images = decoded_images(run, paths)
    inputs, pictures = zip(*(camera_frame(image, frame) for image in images.values()))
    reference = image_reference(run, backbone, fused, temperature, list(pictures))
    return ParityReference(np.stack(inputs), reference.fused, reference.pipeline, list(images))


def tolerance(precision: str, temperature: float | None = None,
              min_agreement: float | None = None) -> tuple[float, float | None]:
    """(minimum top-1 agreement, maximum |Δprob|) for ``precision``.

    A calibrated temperature T < 1 sharpens the softmax, which multiplies every logit error by 1/T on its
    way into the probabilities; the |Δprob| bound is widened by the same factor, so the requirement on the
    logits stays what it is at T = 1. ``min_agreement`` overrides the precision's agreement bound.
    """
    minimum, maximum = TOLERANCES[precision]
    if min_agreement is not None:
        minimum = min_agreement
    if maximum is not None and temperature:
        maximum /= min(temperature, 1.0)
    return minimum, maximum


def compare(exported: np.ndarray, reference: ParityReference, precision: str, temperature: float | None = None,
            min_agreement: float | None = None) -> ParityResult:
    """Top-1 agreement and max |Δprob| of ``exported`` against both references, with the precision's tolerance."""
    if len(exported) != len(reference.fused):  # a file decoded for one side and not the other: never broadcast
        raise ClipedgeError(f"parity: {len(exported)} exported answers for {len(reference.fused)} reference images")
    minimum, maximum = tolerance(precision, temperature, min_agreement)

    def agreement(other: np.ndarray) -> float:
        return float((exported.argmax(1) == other.argmax(1)).mean())

    return ParityResult(
        images=len(exported),
        agreement_fused=agreement(reference.fused), max_dprob_fused=float(np.abs(exported - reference.fused).max()),
        agreement_pipeline=agreement(reference.pipeline),
        max_dprob_pipeline=float(np.abs(exported - reference.pipeline).max()),
        min_agreement=minimum, max_dprob=maximum,
    )


def reference_set(reference: ParityReference, precision: str, temperature: float | None = None,
                  min_agreement: float | None = None) -> ReferenceSet:
    """The first frames of the export's gate and their fp32 PyTorch probabilities, for the engine gate on the
    device: the fp16 tolerance for fp32 and fp16 engines (TensorRT's TF32 builder flag is on by default, so an fp32
    engine may round matrix products to TF32), the INT8 gate's for INT8 engines."""
    minimum, maximum = tolerance("int8" if precision == "int8" else "fp16", temperature, min_agreement)
    count = REFERENCE_SET_IMAGES
    return ReferenceSet(reference.frames[:count], reference.fused[:count], minimum, maximum)


def backend_probs(backend: Backend, frames: np.ndarray) -> np.ndarray:
    """``probs`` of a runtime backend over all frames, in the chunks its batch range accepts."""
    low, high = backend.batch_range
    return run_in_batches(backend.infer, frames, high or REFERENCE_BATCH, low)["probs"]


def onnxruntime_backend(model_path: Path, device: str) -> OnnxRuntimeBackend:
    """The exported ONNX in the runtime's own onnxruntime backend (what users run): the CUDA provider when
    checking on a GPU, without TF32 (fp32 parity needs true fp32), else the CPU."""
    import onnxruntime as ort

    use_cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    providers: list = [("CUDAExecutionProvider", {"use_tf32": "0"})] if use_cuda else []
    return OnnxRuntimeBackend(model_path, [*providers, "CPUExecutionProvider"], threads=torch.get_num_threads())


def onnxruntime_probs(model_path: Path, device: str) -> ProbsFunction:
    """``probs`` of the exported ONNX through :func:`onnxruntime_backend`."""
    backend = onnxruntime_backend(model_path, device)
    return lambda frames: backend_probs(backend, frames)
