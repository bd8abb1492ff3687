"""The in-graph camera front end of a ``--frame WxH`` export: raw frame → colour → resize → crop, exact.

The model input becomes the camera's own frame (RGB or BGR ``uint8 [N, H, W,
3]``, or one NV12 plane ``uint8 [N, H*3/2, W]``) and the graph does what the
runtime's PIL path does on the CPU, to the grey level:

1. cast first (TensorRT takes UINT8 only as a network input feeding a Cast);
2. slice the window of rows and columns that the centre crop's pixels draw
   on (the central square of a 16:9 frame plus the filter's reach), so no
   work is spent on what the crop throws away;
3. colour: channel order by a Gather; NV12 by the integer formula of
   ``clipedge.runtime.preprocessing.nv12``, chroma replicated over its 2x2 block;
4. Pillow's two resampling passes, in Pillow's order, each a MatMul with the
   constant integer weights of ``pil_resample`` followed by Pillow's
   ``clip((Σ + 2**21) >> 22)``.

Step 4 is exact, not merely close. Pillow sums 8-bit pixels times 22-bit
weights in 32-bit integers; float32 holds integers only up to 2**24, and
TF32 tensor cores keep 11 significant bits of each operand. So each weight is
split into base-2**b digits (two digits of 11 bits for up to 32 taps; more,
smaller digits for stronger downscales), one constant matrix per digit: every
product and partial sum is then an integer below 2**24 with operands of at
most 11 significant bits, exact in fp32 and TF32 alike, whatever the
summation order. The digit sums are recombined with exact carries (a
multiply by a power of two, Floor, Add) into Pillow's rounded result. Only
Cast, Slice, Gather, Reshape/Expand, MatMul, Mul, Add, Floor and Clip appear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.contract import FrameInput
from clipedge.runtime.preprocessing.frame_geometry import AxisPlan, plan_frame
from clipedge.runtime.preprocessing.nv12 import decoding_coefficients

from .fuse import FusedClassifier
from .pil_resample import FILTERS, PRECISION_BITS, resample_matrix, vertical_first

#: float32 represents every integer below this exactly
EXACT_FLOAT32 = 1 << 24
#: digit counts tried, fewest first; the top digit needs at most 11 significant bits (TF32, fp16)
DIGIT_COUNTS = (2, 3, 4)


@dataclass(frozen=True)
class AxisResample:
    """One axis of the front end: the input window [first, last) and the weights from it to the output."""

    first: int
    last: int
    #: int64 [size, last - first], Pillow's fixed-point weights (or 0/1 where the axis is only cropped)
    weights: np.ndarray
    resampled: bool


def axis_resample(plan: AxisPlan, size: int, interpolation: str, align: int = 1) -> AxisResample:
    """The rows of the axis's full resize matrix that the crop keeps (zero rows where it pads), restricted to
    the input columns they touch, widened to multiples of ``align`` (2 for NV12's chroma)."""
    if plan.needs_resample:
        full = resample_matrix(plan.source, plan.resized, interpolation)
    else:
        full = np.eye(plan.source, dtype=np.int64) << PRECISION_BITS
    kept = np.zeros((size, plan.source), dtype=np.int64)
    for out in range(size):
        index = plan.start + out
        if 0 <= index < plan.resized:
            kept[out] = full[index]
    used = np.flatnonzero(kept.any(axis=0))
    first, last = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
    first, last = first - first % align, min(-(-last // align) * align, plan.source)
    weights = kept[:, first:last]
    return AxisResample(first, last, weights if plan.needs_resample else weights >> PRECISION_BITS, plan.needs_resample)


def digit_split(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Weights as base-2**bits digits, least significant first, stacked [digits, out, in] (float32, exact); the
    top digit carries the sign. Chooses the fewest digits whose digit sums stay exact in float32."""
    taps = int((weights != 0).sum(axis=1).max())
    for count in DIGIT_COUNTS:
        bits = -(-PRECISION_BITS // count)
        if 255 * ((1 << bits) - 1) * taps < EXACT_FLOAT32 and bits * (count - 1) < PRECISION_BITS:
            digits = [(weights >> (bits * j)) & ((1 << bits) - 1) for j in range(count - 1)]
            digits.append(weights >> (bits * (count - 1)))  # arithmetic shift: the signed top digit
            return np.stack(digits).astype(np.float32), bits
    raise ClipedgeError(f"--frame: a {taps}-tap resampling filter is too wide to evaluate exactly in float32 "
                        "(a downscale beyond 60x); choose a frame size closer to the model's")


class PillowPass(nn.Module):
    """One exact Pillow resampling pass along the last axis (``rows=False``) or the second-to-last (``rows=True``)."""

    def __init__(self, axis: AxisResample, rows: bool):
        super().__init__()
        self.rows, self.resampled = rows, axis.resampled
        self.size = axis.weights.shape[0]
        if axis.resampled:
            digits, self.bits = digit_split(axis.weights)
            self.count = len(digits)
            stacked = digits.reshape(-1, digits.shape[-1])  # [digits * out, in]: one MatMul for every digit
        else:
            stacked = axis.weights.astype(np.float32)
        self.register_buffer("weights", torch.from_numpy(stacked if rows else np.ascontiguousarray(stacked.T)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = torch.matmul(self.weights, x) if self.rows else torch.matmul(x, self.weights)
        if not self.resampled:
            return summed
        parts = [summed[..., j * self.size:(j + 1) * self.size, :] if self.rows else summed[..., j * self.size:(j + 1) * self.size]
                 for j in range(self.count)]
        step = 2.0 ** -self.bits
        carried = parts[0]
        for part in parts[1:]:
            carried = part + torch.floor(carried * step)
        shift = self.bits * (self.count - 1)
        rounded = torch.floor((carried + 2.0 ** (PRECISION_BITS - 1 - shift)) * 2.0 ** (shift - PRECISION_BITS))
        return torch.clamp(rounded, 0.0, 255.0)


class FrameFrontEnd(nn.Module):
    """uint8 camera frames → float NCHW pixels in [0, 255] at model size, equal to the runtime's PIL path."""

    def __init__(self, frame: FrameInput, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest"):
        super().__init__()
        if interpolation not in FILTERS:
            raise ClipedgeError(f"--frame: the model's interpolation {interpolation!r} has no exact graph form "
                                f"(supported: {', '.join(FILTERS)})")
        self.frame = frame
        plan = plan_frame(frame.width, frame.height, size, resize_mode)
        align = 2 if frame.pixel_format == "nv12" else 1
        self.x = axis_resample(plan.x, size, interpolation, align)
        self.y = axis_resample(plan.y, size, interpolation, align)
        self.vertical_first = vertical_first(frame.width, frame.height, *plan.resized)
        self.columns = PillowPass(self.x, rows=False)
        self.rows = PillowPass(self.y, rows=True)
        if frame.pixel_format == "bgr":
            self.register_buffer("rgb_order", torch.tensor([2, 1, 0]))
        if frame.pixel_format == "nv12":
            self.colour = decoding_coefficients(frame.colour_matrix or "bt601")

    def rgb_window(self, frames: torch.Tensor) -> torch.Tensor:
        """float [N, 3, rows, columns] of the window the crop draws on, in RGB order."""
        x = frames.float()  # the Cast comes first
        y0, y1, x0, x1 = self.y.first, self.y.last, self.x.first, self.x.last
        if self.frame.pixel_format != "nv12":
            window = x[:, y0:y1, x0:x1, :]
            if self.frame.pixel_format == "bgr":
                window = torch.index_select(window, 3, self.rgb_order)
            return window.permute(0, 3, 1, 2)
        height = self.frame.height
        luma = x[:, y0:y1, x0:x1]
        chroma = x[:, height + y0 // 2:height + y1 // 2, x0:x1]  # interleaved U, V pairs
        rows, columns = (y1 - y0) // 2, (x1 - x0) // 2
        pairs = chroma.reshape(-1, rows, columns, 2)

        def replicate(plane: torch.Tensor) -> torch.Tensor:  # each chroma sample over its 2x2 pixels
            return plane[:, :, None, :, None].expand(-1, -1, 2, -1, 2).reshape(-1, 2 * rows, 2 * columns)

        u, v = replicate(pairs[..., 0]) - 128.0, replicate(pairs[..., 1]) - 128.0
        c = self.colour
        base = c.y * (luma - 16.0) + 128.0
        rgb = torch.stack([base + c.r_v * v, base - c.g_u * u - c.g_v * v, base + c.b_u * u], dim=1)
        return torch.clamp(torch.floor(rgb * (1.0 / 256.0)), 0.0, 255.0)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        window = self.rgb_window(frames)
        if self.vertical_first:
            return self.columns(self.rows(window))
        return self.rows(self.columns(window))


class FrameClassifier(nn.Module):
    """The fused classifier behind a camera front end: uint8 frames → (logits, probs[, embeddings])."""

    def __init__(self, fused: FusedClassifier, frame: FrameInput, size: int, interpolation: str, resize_mode: str):
        super().__init__()
        self.fused = fused
        self.front_end = FrameFrontEnd(frame, size, interpolation, resize_mode).to(fused.device)
        self.with_embeddings = fused.with_embeddings

    @property
    def device(self) -> torch.device:
        return self.fused.device

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.fused.classify(self.front_end(frames))
