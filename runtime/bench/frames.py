"""``clipedge bench --frame WxH [--jpeg]``: what a camera loop pays, from the camera's frame to probabilities.

The model-only timing feeds frames already at the model's input size; the
frame pipeline feeds whole camera frames through ``Classifier`` (decode with
``--jpeg``, colour order, resize, crop, model), timed in the same alternating
rounds. A ``--frame`` model takes the camera frame itself, so both time the
same thing for it and the overhead is what the runtime adds around the call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, check_image, load_rgb
from clipedge.runtime.contract import FrameInput, parse_frame
from clipedge.runtime.preprocessing.nv12 import rgb_to_nv12

JPEG_QUALITY = 90


def camera_scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB frame: smooth shading and large shapes from upsampled noise, plus sensor noise (JPEG
    compresses it like a photograph, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8))
    scene = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.normal(0, 4, (height, width, 1)).astype(np.int16)
    return np.clip(scene + noise, 0, 255).astype(np.uint8)


def check_jpeg(path: Path, frame: FrameInput, decoding: DecodeOptions = DecodeOptions()) -> Path:
    """A user's ``--jpeg FILE``: an RGB (YCbCr) JPEG of the ``--frame`` size, as a camera writes it, checked through
    the decoding policy the timed pipeline uses (its size after EXIF orientation, when the model applies it)."""
    problem = check_image(path, decoding)
    if problem is not None:
        detail = f": {problem.detail}" if problem.detail else ""
        raise ClipedgeError(f"--jpeg {path}: not a readable image ({problem.reason}{detail})")
    with Image.open(path) as image:  # the header again, for its format and mode: check_image has vetted it
        kind, mode = image.format, image.mode
    size = load_rgb(path, decoding).size
    if kind != "JPEG":
        raise ClipedgeError(f"--jpeg {path}: a {kind} file; expected a JPEG")
    if mode != "RGB":
        raise ClipedgeError(f"--jpeg {path}: decodes to {mode}, expected a colour (YCbCr → RGB) JPEG as cameras write; "
                            "convert it or leave --jpeg without a file to use a generated frame")
    if size != (frame.width, frame.height):
        raise ClipedgeError(f"--jpeg {path}: {size[0]}x{size[1]}, but --frame is {frame.width}x{frame.height}")
    return path


def frame_pipeline(classifier: Any, frame_size: str, batch: int, jpeg: str | None,
                   workdir: Path) -> Callable[[np.ndarray], object]:
    """``batch`` camera frames (or JPEG files) through ``classifier.predict``, ready to time."""
    frame = parse_frame(frame_size)
    model_frame: FrameInput | None = classifier.frame
    if jpeg is not None:
        if model_frame is not None and model_frame.pixel_format == "nv12":
            raise ClipedgeError("--jpeg: this model takes NV12 planes, which no JPEG decodes to")
        if jpeg:
            path = check_jpeg(Path(jpeg), frame, classifier.decoding)
        else:
            path = workdir / f"frame-{frame.width}x{frame.height}.jpg"
            Image.fromarray(camera_scene(frame.width, frame.height)).save(path, quality=JPEG_QUALITY)
        paths = [path] * batch
        return lambda _: classifier.predict(paths)
    rgb = camera_scene(frame.width, frame.height)
    if model_frame is not None and model_frame.pixel_format == "nv12":
        if frame.width % 2 or frame.height % 2:
            raise ClipedgeError(f"--frame {frame_size}: NV12 frames need an even width and height")
        one = rgb_to_nv12(rgb, model_frame.colour_matrix or "bt601")
    elif classifier.bgr or (model_frame is not None and model_frame.pixel_format == "bgr"):
        one = np.ascontiguousarray(rgb[..., ::-1])
    else:
        one = rgb
    frames = [one.copy() for _ in range(batch)]
    return lambda _: classifier.predict(frames)
