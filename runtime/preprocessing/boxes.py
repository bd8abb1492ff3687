"""Detector crops: regions of one frame, checked and cut out, for one batched classifier call.

A detector → classifier pipeline (DeepStream's "secondary classifier") hands
over boxes in pixel coordinates ``[x0, y0, x1, y1]``, often fractional. Each
box is widened to whole pixels (floor of the top-left corner, ceil of the
bottom-right), must lie inside the frame and enclose at least one pixel; the
crops are views, and the classifier then applies the model's own resize mode
to each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    """One box of one image file, as ``clipedge predict --boxes`` lists it."""

    path: Path
    box: Box

    def __str__(self) -> str:
        return f"{self.path} [{', '.join(map(str, self.box))}]"


def check_boxes(boxes: Any, width: int, height: int, source: str = "boxes") -> list[Box]:
    """Each ``[x0, y0, x1, y1]`` as whole-pixel bounds inside a ``width`` x ``height`` frame; one-line errors name
    the box and what is wrong with it."""
    if not isinstance(boxes, Sequence) or isinstance(boxes, (str, bytes)) or not len(boxes):
        raise ClipedgeError(f"{source}: expected a non-empty list of [x0, y0, x1, y1] boxes")
    checked = []
    for number, box in enumerate(boxes):
        where = f"{source}[{number}] {box}"
        try:
            x0, y0, x1, y1 = (float(value) for value in box)
        except (TypeError, ValueError):
            raise ClipedgeError(f"{where}: expected four numbers [x0, y0, x1, y1]") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ClipedgeError(f"{where}: coordinates must be finite numbers")
        if x1 <= x0 or y1 <= y0:
            kind = "empty" if x1 == x0 or y1 == y0 else "inverted"
            raise ClipedgeError(f"{where}: {kind} box; expected x0 < x1 and y0 < y1")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ClipedgeError(f"{where}: outside the {width}x{height} frame (expected 0 <= x0 < x1 <= {width}, "
                                f"0 <= y0 < y1 <= {height})")
        checked.append((math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)))
    return checked


def crop_boxes(frame: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
    """The regions of an H x W (x C) frame, as views."""
    return [frame[top:bottom, left:right] for left, top, right, bottom in boxes]


def read_boxes_file(path: Path) -> dict[str, list] | list:
    """``--boxes FILE``: a JSON list of boxes (used for every image), or an object mapping an image path (as given
    on the command line) or file name to its boxes."""
    try:
        boxes = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ClipedgeError(f"--boxes {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"--boxes {path}: not valid JSON ({error})") from None
    if not isinstance(boxes, (list, dict)):
        raise ClipedgeError(f"--boxes {path}: expected a list of [x0, y0, x1, y1] boxes or an object image -> boxes")
    return boxes


def boxes_for(boxes: dict[str, list] | list, image: Path) -> list | None:
    """The boxes ``--boxes`` gives for one image: the shared list, or its entry by path or file name."""
    if isinstance(boxes, list):
        return boxes
    return boxes.get(str(image), boxes.get(image.name))
