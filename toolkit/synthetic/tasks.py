"""Downstream few-shot tasks with a domain shift, written as ordinary image folders.

clipedge-tiny was pretrained on filled, saturated shapes. These tasks keep the
classes it knows but change how they look, the way a factory camera or a
satellite differs from web photos: zero-shot degrades, and a few labelled
images per class let an adapter recover.

- ``shapes-sketch``: 10 shape classes drawn as thin ink outlines on noisy
  paper, in a palette the pretraining never used, with stray pencil strokes.
- ``colours-tinted``: 8 colour classes under a strong coloured light cast and
  low contrast, on noisy backgrounds.
- ``shapes-dusk``: 10 shape classes, filled as in pretraining but seen by a
  moving camera at dusk: dimmer, motion-blurred along one axis and grainy.

And one control without a shift, drawn like the pretraining scenes:

- ``colours``: 8 colour classes, one object of any shape on any background.
  Zero-shot is strong here; it is where a model's own precision can be
  judged (INT8 calibration) without the shift's razor-thin class margins.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipedge.core.errors import ClipedgeError

from .scenes import BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene, SceneObject, background, draw_objects, render

INK = {"ink": (25, 25, 35), "graphite": (70, 70, 75), "sepia": (90, 60, 30), "navy ink": (20, 30, 80)}


def _sketch(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    paper = np.clip(rng.uniform(215, 250) + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(paper)
    ink = list(INK.values())[rng.integers(len(INK))]
    scene = Scene((SceneObject(SHAPES[label], "red", list(SIZES)[rng.integers(1, 3)]),), "plain")
    draw_objects(image, scene, rng, outline_only=True, colours={"red": ink})
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 5)):  # stray pencil strokes
        x0, y0, x1, y1 = rng.integers(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(c) + 60 for c in ink), width=1)
    return np.asarray(image)


def _in_distribution(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    scene = Scene((SceneObject(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[label], list(SIZES)[rng.integers(len(SIZES))]),),
                  BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    return render(scene, size, rng)


def _tinted(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    colour = list(COLOURS)[label]
    scene = Scene((SceneObject(SHAPES[rng.integers(len(SHAPES))], colour, list(SIZES)[rng.integers(1, 3)]),),
                  BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    image = Image.fromarray(background("noisy", size, rng, palette=rng.uniform(90, 160, (2, 3))).astype(np.uint8))
    draw_objects(image, scene, rng)
    pixels = np.asarray(image).astype(np.float32)
    tint = rng.uniform(0.55, 1.25, 3)  # a strong coloured light cast
    pixels = 128 + (pixels * tint - 128) * rng.uniform(0.45, 0.7)  # and low contrast
    return np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)


def _dusk(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    scene = Scene((SceneObject(SHAPES[label], list(COLOURS)[rng.integers(len(COLOURS))], list(SIZES)[rng.integers(1, 3)]),),
                  BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    pixels = render(scene, size, rng).astype(np.float32) / 255
    length = int(rng.integers(3, 7))  # motion blur: a box along one image axis
    kernel = np.ones(length, np.float32) / length
    axis = int(rng.integers(2))
    pixels = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, pixels)
    pixels = rng.uniform(0.6, 0.9) * pixels ** rng.uniform(1.0, 1.3)  # dimmer, darker shadows
    pixels = pixels + rng.normal(0, 0.05, pixels.shape)  # sensor grain
    return np.clip(255 * pixels, 0, 255).astype(np.uint8)


TASKS: dict[str, tuple[tuple[str, ...], Callable[[int, np.random.Generator, int], np.ndarray]]] = {
    "shapes-sketch": (SHAPES, _sketch),
    "colours-tinted": (tuple(COLOURS), _tinted),
    "shapes-dusk": (SHAPES, _dusk),
    "colours": (tuple(COLOURS), _in_distribution),
}


def render_task(name: str, images_per_class: int, seed: int, image_size: int = 64) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The task's class names, images uint8 [N, H, W, 3] and labels, in memory."""
    if name not in TASKS:
        raise ClipedgeError(f"--task {name}: unknown task; expected one of {', '.join(TASKS)}")
    classes, draw = TASKS[name]
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), images_per_class)
    return classes, np.stack([draw(int(label), rng, image_size) for label in labels]), labels


def write_task(name: str, out_dir: str | Path, images_per_class: int = 60, seed: int = 0, image_size: int = 64) -> Path:
    """Write the task as ``out_dir/<class>/<index>.png`` (replacing an earlier copy) and return ``out_dir``."""
    out_dir = Path(out_dir)
    classes, images, labels = render_task(name, images_per_class, seed, image_size)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = staging / classes[label].replace(" ", "_")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png", compress_level=1)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir
