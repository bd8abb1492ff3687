"""The camera-frame input of a ``clipedge export --frame WxH`` model: size, pixel format, colour matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clipedge.core.errors import ClipedgeError

from .names import INPUT_NAME

PIXEL_FORMATS = ("rgb", "bgr", "nv12")
#: YCbCr → RGB matrices an NV12 front end implements, both limited range (Y 16-235, CbCr 16-240)
COLOUR_MATRICES = ("bt601", "bt709")


@dataclass(frozen=True)
class FrameInput:
    """The raw camera frame a ``--frame`` export takes instead of model-size RGB images.

    rgb/bgr: ``uint8 [N, height, width, 3]``; nv12: one ``uint8 [N, height * 3/2, width]`` plane (the Y rows,
    then the interleaved half-resolution U, V rows), what GStreamer and Jetson cameras deliver.
    ``colour_matrix`` (nv12 only) names the limited-range YCbCr matrix the graph converts with.
    """

    width: int
    height: int
    pixel_format: str = "rgb"
    colour_matrix: str | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One frame's shape, without the batch dimension."""
        if self.pixel_format == "nv12":
            return (self.height * 3 // 2, self.width)
        return (self.height, self.width, 3)

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.pixel_format}"

    def to_dict(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"width": self.width, "height": self.height, "pixel_format": self.pixel_format}
        if self.colour_matrix:
            facts["colour_matrix"] = self.colour_matrix
        return facts


def default_colour_matrix(height: int) -> str:
    """GStreamer's default for YUV video whose caps name no colorimetry: BT.709 above 576 lines, BT.601 up to
    576 (gst-libs/gst/video/video-info.c, ``set_default_colorimetry``); both limited range."""
    return "bt709" if height > 576 else "bt601"


def parse_frame(text: str, pixel_format: str = "rgb", colour_matrix: str | None = None,
                option: str = "--frame") -> FrameInput:
    """``WIDTHxHEIGHT`` (e.g. 1920x1080) and a pixel format → a checked FrameInput; one-line errors."""
    parts = str(text).lower().split("x")
    try:
        width, height = (int(part) for part in parts)
    except ValueError:
        raise ClipedgeError(f"{option} {text}: expected WIDTHxHEIGHT in whole pixels, e.g. 1920x1080") from None
    if width < 1 or height < 1:
        raise ClipedgeError(f"{option} {text}: width and height must be at least 1 pixel")
    if pixel_format not in PIXEL_FORMATS:
        raise ClipedgeError(f"--pixel-format {pixel_format}: expected one of {', '.join(PIXEL_FORMATS)}")
    if pixel_format != "nv12":
        if colour_matrix:
            raise ClipedgeError(f"--colour-matrix {colour_matrix}: only NV12 frames carry YCbCr (add --pixel-format nv12)")
        return FrameInput(width, height, pixel_format)
    if width % 2 or height % 2:
        raise ClipedgeError(f"{option} {text} with --pixel-format nv12: width and height must be even "
                            "(NV12 stores one U, V pair per 2x2 pixels)")
    matrix = colour_matrix or default_colour_matrix(height)
    if matrix not in COLOUR_MATRICES:
        raise ClipedgeError(f"--colour-matrix {matrix}: expected one of {', '.join(COLOUR_MATRICES)}")
    return FrameInput(width, height, pixel_format, matrix)


def frame_input_spec(frame: FrameInput, fixed_batch: int | None) -> dict[str, Any]:
    """The ``input`` metadata entry of a ``--frame`` export."""
    layout = "NV12" if frame.pixel_format == "nv12" else "NHWC"
    return {"name": INPUT_NAME, "dtype": "uint8", "layout": layout, "channels": frame.pixel_format.upper(),
            "shape": [fixed_batch or "N", *frame.sample_shape], "frame": frame.to_dict()}


def frame_input_of(metadata: dict[str, str]) -> FrameInput | None:
    """The camera frame a model takes, from its ``input`` metadata; None for a model-size-image model."""
    try:
        facts = json.loads(metadata.get("input", "{}")).get("frame")
        if not facts:
            return None
        return FrameInput(int(facts["width"]), int(facts["height"]), str(facts["pixel_format"]),
                          facts.get("colour_matrix"))
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise ClipedgeError(f"model: malformed frame input metadata ({error})") from None
