"""Prompt templates and the text classifier W built from them.

W's rows are the classes' text directions: the L2-normalised mean of the
L2-normalised embeddings of every template filled with the class name. Every
head starts from W, and export bakes it into the graph as a constant.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from clipedge.core.errors import ClipedgeError

SINGLE_TEMPLATE = ("a photo of a {}.",)

#: The 80 ImageNet prompts published with the CLIP paper (Radford et al., 2021).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

BUILTIN_TEMPLATES = {"single": SINGLE_TEMPLATE, "imagenet": IMAGENET_TEMPLATES}


def resolve_templates(choice: str) -> list[str]:
    """``single``, ``imagenet``, or a file with one template containing ``{}`` per line."""
    if choice in BUILTIN_TEMPLATES:
        return list(BUILTIN_TEMPLATES[choice])
    path = Path(choice)
    if not path.is_file():
        raise ClipedgeError(
            f"--templates {choice}: expected 'single', 'imagenet', or a file with one template per line"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        detail = f"line {bad[0]!r} has no single {{}}" if bad else "no templates"
        raise ClipedgeError(f"--templates {path}: {detail} (each line must contain {{}} exactly once)")
    return templates


@torch.no_grad()
def build_text_classifier(encode_texts, class_names: list[str], templates: list[str]) -> torch.Tensor:
    """W [C, D]: per class, normalised mean of normalised template embeddings.

    ``encode_texts`` maps a list of strings to raw text features ``[n, D]``.
    """
    rows = []
    for name in class_names:
        embeddings = F.normalize(encode_texts([t.format(name) for t in templates]), dim=-1)
        rows.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(rows)
