"""Image features from the frozen encoder: eval-transform features and augmented training views.

Augmentation follows the papers (random resized crop with the model's
interpolation, horizontal flip) at the scale range of the head's recipe
(Tip-Adapter's 0.5–1 by default, Dassl's 0.08–1 for CLIP-Adapter's official one). Each (view, image) pair reseeds the
RNG from the run seed, so features are identical across runs, worker counts
and machines, which is what makes the cache key honest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from clipedge.core.images import DecodeOptions, SkippedFile, UnreadableImage, load_rgb

from .backbone import Backbone, BackboneSpec
from .data import Sample

log = logging.getLogger(__name__)

AUGMENT_SCALE = (0.5, 1.0)
INTERPOLATIONS = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "nearest": transforms.InterpolationMode.NEAREST,
}


@dataclass
class FeatureSet:
    """Raw features of a list of samples; ``features`` is [V, N, D] for augmented views, else [N, D].

    ``skipped``: the samples whose file could not be decoded, left out of ``features``."""

    features: torch.Tensor
    labels: torch.Tensor
    relpaths: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)


def as_views(features: FeatureSet) -> FeatureSet:
    """Training features as [V, N, D]: eval-transform features ([N, D]) become one view."""
    if features.features.dim() == 3:
        return features
    return FeatureSet(features.features.unsqueeze(0), features.labels, features.relpaths, features.skipped)


def augment_transform(spec: BackboneSpec, scale: tuple[float, float] = AUGMENT_SCALE) -> Callable:
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                spec.image_size, scale=scale, interpolation=INTERPOLATIONS.get(spec.interpolation, INTERPOLATIONS["bicubic"])
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


class _ImageList(Dataset):
    """Decodes samples on demand; a bad file yields why it was skipped instead of pixels."""

    def __init__(self, samples: list[Sample], transform: Callable, seed: int | None, decoding: DecodeOptions):
        self.samples, self.transform, self.seed, self.decoding = samples, transform, seed, decoding

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        try:
            image = load_rgb(self.samples[index].path, self.decoding)
        except UnreadableImage as error:
            return error.skipped, index
        if self.seed is not None:
            torch.manual_seed(self.seed * 1_000_003 + index)
        return self.transform(image), index


def _collate(batch):
    good = [(pixels, index) for pixels, index in batch if isinstance(pixels, torch.Tensor)]
    bad = [(skipped, index) for skipped, index in batch if isinstance(skipped, SkippedFile)]
    pixels = torch.stack([p for p, _ in good]) if good else None
    return pixels, [i for _, i in good], bad


def _encode(backbone: Backbone, dataset: _ImageList, batch_size: int, workers: int, description: str, progress: bool):
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    features = torch.empty(len(dataset), backbone.spec.embed_dim)
    kept, failed = [], {}
    for pixels, indices, bad in tqdm(loader, desc=description, unit="batch", leave=False, disable=not progress):
        failed.update((index, skipped) for skipped, index in bad)
        if pixels is not None:
            features[indices] = backbone.encode_images(pixels)
            kept += indices
    return features, sorted(kept), failed


def extract_features(
    backbone: Backbone,
    samples: list[Sample],
    views: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    workers: int = 0,
    description: str = "features",
    progress: bool = True,
    scale: tuple[float, float] = AUGMENT_SCALE,
    decoding: DecodeOptions = DecodeOptions(),
) -> FeatureSet:
    """Features under the eval transform (``views=0``) or under ``views`` augmented views at crop ``scale``; a
    file that fails to decode in any view is left out of all of them and listed in ``skipped``."""
    if views == 0:
        dataset = _ImageList(samples, backbone.eval_transform, None, decoding)
        features, kept, failed = _encode(backbone, dataset, batch_size, workers, description, progress)
        stacked = features[kept]
    else:
        transform = augment_transform(backbone.spec, scale)
        per_view, failed = [], {}
        for view in range(views):
            dataset = _ImageList(samples, transform, seed * 1009 + view, decoding)
            features, _, failed_here = _encode(backbone, dataset, batch_size, workers, f"{description} view {view + 1}/{views}", progress)
            per_view.append(features)
            failed.update(failed_here)
        kept = [i for i in range(len(samples)) if i not in failed]
        stacked = torch.stack(per_view)[:, kept]
    skipped = [failed[i] for i in sorted(failed)]
    if skipped:
        names = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
        log.warning("skipped %d image(s) that could not be decoded: %s", len(skipped), names)
    labels = torch.tensor([samples[i].label for i in kept], dtype=torch.long)
    return FeatureSet(stacked, labels, [samples[i].relpath for i in kept], skipped)
