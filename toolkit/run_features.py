"""Features of a trained run's own images, from its cache, encoding only what is missing.

Evaluation, calibration and export all need the features (or images) of the
run's train, val and test splits; the run directory records exactly which
images those are (``split.json``, less any file in ``skipped.json``) and how
they were decoded, and caches their features, so the backbone is built only
when something is not cached yet.
"""

from __future__ import annotations

from pathlib import Path

from clipedge.core.images import DecodeOptions

from .backbone import Backbone, load_backbone_from_spec
from .data import LabelledImages, read_split_file
from .devices import resolve_device
from .feature_cache import FeatureCache, cached_features
from .features import AUGMENT_SCALE, FeatureSet, as_views
from .run_dir import CACHE_DIR, SPLIT_FILE, Run, read_skipped, record_skipped


def run_decoding(run: Run) -> DecodeOptions:
    """How the run decoded its files (EXIF orientation, pixel limit): every later step decodes the same way."""
    return DecodeOptions.from_manifest(run.manifest)


def run_data(run: Run) -> LabelledImages:
    """The run's own split (RUN/split.json), resolved against the data root it was trained on, without the files
    any step recorded as undecodable (RUN/skipped.json)."""
    failed = frozenset(Path(entry["path"]) for entry in read_skipped(run.path))
    data = read_split_file(Path(run.manifest["data"]["root"]), run.path / SPLIT_FILE, run_decoding(run), failed)
    if data.skipped:
        record_skipped(run.path, data.skipped, "split")
    return data


class RunFeatures:
    """Lazily encoded, cached features of a run's splits."""

    def __init__(self, run: Run, device: str = "auto", progress: bool = True):
        self.run, self.progress = run, progress
        self.data = run_data(run)
        self._device = device
        self._cache = FeatureCache(run.path / CACHE_DIR)
        self._backbone: Backbone | None = None
        self._splits: dict[str, FeatureSet] = {}

    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone_from_spec(self.run.backbone_spec, device=resolve_device(self._device))
        return self._backbone

    def split(self, name: str) -> FeatureSet:
        """``train`` gives the views the head was trained on ([V, N, D]; V = 1 for eval-transform features);
        val and test [N, D]."""
        if name not in self._splits:
            training = self.run.manifest["training"]
            views, seed = (training["views"], self.run.manifest["seed"]) if name == "train" else (0, 0)
            scale = tuple(training.get("augment_scale") or AUGMENT_SCALE)
            features = cached_features(
                self.run.backbone_spec, self.backbone, self._cache, name, self.data.splits[name], views, seed,
                self.progress, scale, run_decoding(self.run),
            )
            record_skipped(self.run.path, features.skipped, "features")
            self._splits[name] = as_views(features) if name == "train" else features
        return self._splits[name]
