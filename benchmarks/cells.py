"""Few-shot cells computed in one process, as ``clipedge train`` computes them.

A benchmark grid (methods × shots × seeds) would otherwise load the backbone,
encode the prompts and read the image list once per cell. Here they happen
once per data set; each cell then uses the library's own steps (few-shot
sampler, cached features with the same keys, each method's options and fit),
so its val and test top-1 equal those of a ``clipedge train`` run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from clipedge.backbone import Backbone
from clipedge.data import LabelledImages, Sample, sample_few_shot
from clipedge.feature_cache import FeatureCache
from clipedge.features import AUGMENT_SCALE, FeatureSet, as_views
from clipedge.heads import FewShotProblem, head_class, head_options
from clipedge.heads.base import accuracy
from clipedge.prompts import build_text_classifier
from clipedge.training import cached_features


class FewShotCells:
    """One data set's cells: shared backbone, text classifier W, feature cache and test features."""

    def __init__(self, backbone: Backbone, data: LabelledImages, templates: list[str], cache_dir: Path):
        self.backbone, self.data = backbone, data
        self.cache = FeatureCache(cache_dir)
        self.text = build_text_classifier(backbone.encode_texts, data.class_names, templates)
        self.test = self.encode("test", data.splits["test"])

    def encode(self, split: str, samples: list[Sample], views: int = 0, seed: int = 0,
               scale: tuple[float, float] = AUGMENT_SCALE) -> FeatureSet:
        return cached_features(self.backbone.spec, lambda: self.backbone, self.cache, split, samples, views, seed,
                               False, scale)

    def run(self, method: str, shots: int, seed: int, val: list[Sample] | None = None, **options) -> dict[str, float]:
        """val and test top-1 and head-fitting seconds of ``method`` on the seed's ``shots``-shot draw;
        ``val`` defaults to the data set's whole val split."""
        head_opts = head_options(method, seed=seed, progress=False, **options)
        augmentation = head_opts.augmentation()
        few_shot = sample_few_shot(self.data.splits["train"], shots, seed, self.data.class_names)
        train = as_views(self.encode("train", few_shot, augmentation.views, seed, augmentation.scale))
        val_features = self.encode("val", self.data.splits["val"] if val is None else val)
        problem = FewShotProblem(self.text, self.backbone.logit_scale, train.features, train.labels,
                                 val_features.features, val_features.labels)
        started = time.perf_counter()
        head = head_class(method).fit(problem, head_opts)
        head_s = time.perf_counter() - started
        with torch.no_grad():
            return {"val_top1": accuracy(head(val_features.features), val_features.labels),
                    "test_top1": accuracy(head(self.test.features), self.test.labels), "head_s": head_s}
