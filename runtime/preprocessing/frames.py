"""Input for ``--frame`` models: camera frames of exactly the exported size, passed straight through.

Such a model resizes and crops inside its graph, so the runtime must not
touch the pixels: a frame of the exported size and pixel format goes to the
model as it is, and any other size is refused (a silent CPU resize would
bring back the cost the export removed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, to_rgb
from clipedge.runtime.contract import FrameInput
from clipedge.runtime.preprocessing.transform import load_image


def describe_shape(shape: tuple[int, ...], frame: FrameInput) -> str:
    """A frame's size as the user thinks of it: WIDTHxHEIGHT (an NV12 plane's rows are 3/2 of its height)."""
    if frame.pixel_format == "nv12" and len(shape) == 2:
        return f"{shape[1]}x{shape[0] * 2 // 3} (an NV12 plane of {shape[0]} rows)"
    if len(shape) == 3:
        return f"{shape[1]}x{shape[0]} with {shape[2]} channel(s)"
    return f"of shape {list(shape)}"


def _as_array(item: Any, frame: FrameInput, decoding: DecodeOptions) -> np.ndarray:
    """One frame as the model's input array; paths and PIL images only for RGB/BGR models."""
    if isinstance(item, (str, Path)):
        item = load_image(item, decoding)
    if isinstance(item, Image.Image):
        if frame.pixel_format == "nv12":
            raise ClipedgeError("frame: this model takes NV12 planes (uint8 [H*3/2, W] arrays), not decoded images")
        rgb = np.asarray(to_rgb(item))
        return np.ascontiguousarray(rgb[..., ::-1]) if frame.pixel_format == "bgr" else rgb
    if isinstance(item, np.ndarray):
        return item
    raise ClipedgeError(f"frame: expected a path, a PIL image or a uint8 numpy array, got {type(item).__name__}")


def _check(array: np.ndarray, frame: FrameInput) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ClipedgeError(f"frame: expected dtype uint8 (pixels 0-255), got {array.dtype}")
    if array.shape != frame.sample_shape:
        raise ClipedgeError(f"frame {describe_shape(array.shape, frame)}: this model takes {frame.describe()} frames "
                            f"(exported with --frame {frame.width}x{frame.height}); export again for this camera size")
    return array


def prepare_camera_frames(frames: Any, frame: FrameInput,
                          decoding: DecodeOptions = DecodeOptions()) -> tuple[np.ndarray, bool]:
    """Any accepted input → (uint8 [N, *frame.sample_shape], whether the input was one frame); ``decoding``
    applies to image files."""
    rank = len(frame.sample_shape)
    if isinstance(frames, np.ndarray) and frames.ndim == rank + 1:
        if not len(frames):
            raise ClipedgeError("frames: got an empty batch")
        for single in frames[:1]:
            _check(single, frame)
        return np.ascontiguousarray(frames), False
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ClipedgeError("frames: got an empty list")
        return np.stack([_check(_as_array(item, frame, decoding), frame) for item in frames]), False
    return _check(_as_array(frames, frame, decoding), frame)[None], True
