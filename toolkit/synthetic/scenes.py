"""Procedural image–caption pairs: coloured shapes on textured backgrounds, described in words.

This is the pretraining data of ``clipedge-tiny`` and the source of the demo
tasks. Everything is drawn with PIL polygons on numpy backgrounds, seeded, at
the model's resolution, so thousands of pairs per second come from one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "pentagon", "cross", "heart", "diamond", "arrow")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 135, 30), "purple": (140, 60, 180), "pink": (245, 130, 190), "cyan": (50, 200, 215),
}
BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "noisy", "gradient")
SIZES = {"small": (0.22, 0.32), "medium": (0.34, 0.46), "large": (0.48, 0.62)}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str

    @property
    def main(self) -> SceneObject:
        return self.objects[0]


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of each shape in a unit circle (radius 1), before rotation and scaling."""
    def regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
        return [(math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]

    if shape == "circle":
        return regular(32)
    if shape == "square":
        return regular(4, math.pi / 4)
    if shape == "triangle":
        return regular(3)
    if shape == "hexagon":
        return regular(6)
    if shape == "pentagon":
        return regular(5)
    if shape == "diamond":
        return [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else 0.42
            angle = -math.pi / 2 + math.pi * i / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = 0.3, 0.9
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "heart":
        points = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 17, -y / 17 + 0.1))
        return points
    if shape == "arrow":
        return [(-0.9, -0.25), (0.2, -0.25), (0.2, -0.65), (0.95, 0), (0.2, 0.65), (0.2, 0.25), (-0.9, 0.25)]
    raise ValueError(f"unknown shape {shape!r}")


UNIT_POLYGONS = {shape: np.array(_unit_polygon(shape)) for shape in SHAPES}


def polygon(shape: str, centre: tuple[float, float], radius: float, angle: float) -> list[tuple[float, float]]:
    points = UNIT_POLYGONS[shape]
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = points @ np.array([[cos, sin], [-sin, cos]])
    return [tuple(p) for p in rotated * radius + np.array(centre)]


def background(kind: str, size: int, rng: np.random.Generator, palette: np.ndarray | None = None) -> np.ndarray:
    """An HxWx3 float background texture; ``palette`` (2x3) overrides its two colours."""
    a, b = palette if palette is not None else rng.uniform(60, 200, (2, 3))
    grid = np.arange(size)
    if kind == "plain":
        return np.broadcast_to(a, (size, size, 3)).astype(np.float32)
    if kind == "striped":
        period = rng.integers(6, 14)
        horizontal = rng.random() < 0.5
        mask = ((grid // (period // 2)) % 2).astype(bool)
        mask = mask[:, None] if horizontal else mask[None, :]
        return np.where(np.broadcast_to(mask, (size, size))[..., None], a, b).astype(np.float32)
    if kind == "dotted":
        image = np.broadcast_to(a, (size, size, 3)).astype(np.float32).copy()
        period = rng.integers(7, 12)
        yy, xx = np.meshgrid(grid % period, grid % period, indexing="ij")
        dots = (yy - period / 2) ** 2 + (xx - period / 2) ** 2 < (period / 4) ** 2
        image[dots] = b
        return image
    if kind == "checkered":
        period = rng.integers(6, 14)
        mask = ((grid[:, None] // period) + (grid[None, :] // period)) % 2 == 0
        return np.where(mask[..., None], a, b).astype(np.float32)
    if kind == "noisy":
        return np.clip(a + rng.normal(0, 45, (size, size, 3)), 0, 255).astype(np.float32)
    if kind == "gradient":
        t = np.linspace(0, 1, size, dtype=np.float32)
        t = t[:, None] if rng.random() < 0.5 else t[None, :]
        return np.broadcast_to(a * (1 - t[..., None]) + b * t[..., None], (size, size, 3)).astype(np.float32)
    raise ValueError(f"unknown background {kind!r}")


def draw_objects(image: Image.Image, scene: Scene, rng: np.random.Generator, outline_only: bool = False,
                 colours: dict[str, tuple[int, int, int]] = COLOURS) -> None:
    draw = ImageDraw.Draw(image)
    size = image.width
    slots = [(0.5, 0.5)] if len(scene.objects) == 1 else [(0.3, 0.35), (0.7, 0.65)]
    if len(scene.objects) > 1 and rng.random() < 0.5:
        slots = [(0.3, 0.65), (0.7, 0.35)]
    for obj, (cx, cy) in zip(scene.objects, slots):
        low, high = SIZES[obj.size]
        scale = 0.75 if len(scene.objects) > 1 else 1.0
        radius = rng.uniform(low, high) * scale * size / 2
        jitter = (1 - 2 * radius / size) * 0.5 * size
        centre = (cx * size + rng.uniform(-1, 1) * jitter * 0.5, cy * size + rng.uniform(-1, 1) * jitter * 0.5)
        fill = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in colours[obj.colour])
        points = polygon(obj.shape, centre, radius, rng.uniform(0, 2 * math.pi))
        if outline_only:
            draw.line(points + [points[0]], fill=fill, width=max(1, size // 24))
        else:
            draw.polygon(points, fill=fill)


def random_scene(rng: np.random.Generator, second_object_rate: float = 0.3) -> Scene:
    def one() -> SceneObject:
        return SceneObject(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))], list(SIZES)[rng.integers(len(SIZES))])

    objects = (one(), one()) if rng.random() < second_object_rate else (one(),)
    return Scene(objects, BACKGROUNDS[rng.integers(len(BACKGROUNDS))])


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(background(scene.background, size, rng).astype(np.uint8))
    draw_objects(image, scene, rng)
    return np.asarray(image)


def describe(obj: SceneObject, rng: np.random.Generator) -> str:
    """A noun phrase that names the shape always, and the colour and size usually."""
    words = []
    if rng.random() < 0.4:
        words.append(obj.size)
    if rng.random() < 0.85:
        words.append(obj.colour)
    words.append(obj.shape)
    phrase = " ".join(words)
    article = "an" if phrase[0] in "aeiou" else "a"
    return f"{article} {phrase}"


CAPTION_TEMPLATES = (
    "{objects}.",
    "a photo of {objects}.",
    "{objects} on a {background} background.",
    "a picture of {objects} on a {background} background.",
    "an image showing {objects}.",
    "{objects}, {background} background.",
)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    objects = " and ".join(describe(obj, rng) for obj in scene.objects)
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    return template.format(objects=objects, background=scene.background)


@dataclass
class PairBatch:
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    scenes: list[Scene]

    def labels(self, attribute: str) -> np.ndarray:
        """Indices of the main object's ``shape`` or ``colour``, or of the ``background``."""
        if attribute == "shape":
            return np.array([SHAPES.index(s.main.shape) for s in self.scenes])
        if attribute == "colour":
            return np.array([list(COLOURS).index(s.main.colour) for s in self.scenes])
        return np.array([BACKGROUNDS.index(s.background) for s in self.scenes])


def generate_pairs(count: int, seed: int, size: int = 64, second_object_rate: float = 0.3) -> PairBatch:
    """``count`` image–caption pairs, identical for the same seed on any machine."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, second_object_rate) for _ in range(count)]
    images = np.stack([render(scene, size, rng) for scene in scenes])
    return PairBatch(images, [caption(scene, rng) for scene in scenes], scenes)
