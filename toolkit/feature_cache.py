"""Feature cache: fp16 safetensors keyed by backbone + exact image list + transform.

Encoding images is the only slow step of few-shot training; heads train on
cached features in seconds. The key covers everything that changes a feature
(architecture, weights, preprocessing, how files are decoded, each file's path,
size and mtime, the augmentation and its seed), so a hit is always safe to
reuse. Files that failed to decode are stored with the entry, and an entry with
failures is also stored under the key of the files that did decode: the list
later steps read from the run's split.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, SkippedFile

from .backbone import Backbone, BackboneSpec
from .data import Sample
from .features import AUGMENT_SCALE, FeatureSet, extract_features

log = logging.getLogger(__name__)


def cache_key(spec: BackboneSpec, samples: list[Sample], views: int, seed: int,
              scale: tuple[float, float] = AUGMENT_SCALE, decoding: DecodeOptions = DecodeOptions()) -> str:
    digest = hashlib.sha256()
    transform = {"views": views, "seed": seed, "scale": list(scale)} if views else {"eval": True}
    identity = {"backbone": spec.cache_identity(), "transform": transform, "decoding": decoding.to_manifest()}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for sample in samples:
        stat = sample.path.stat()
        digest.update(f"{sample.relpath}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


class FeatureCache:
    """A folder of ``<split>-<key>.safetensors`` files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, split: str, key: str) -> Path:
        return self.folder / f"{split}-{key}.safetensors"

    def load(self, split: str, key: str) -> FeatureSet | None:
        path = self.path(split, key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata()
            relpaths = json.loads(metadata["relpaths"])
            skipped = [SkippedFile.from_dict(entry) for entry in json.loads(metadata.get("skipped", "[]"))]
        except Exception:  # noqa: BLE001 - a damaged cache entry is simply recomputed
            log.warning("ignoring unreadable cache file %s", path)
            return None
        return FeatureSet(tensors["features"].float(), tensors["labels"], relpaths, skipped)

    def save(self, split: str, key: str, features: FeatureSet) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(split, key)
        partial = path.with_suffix(".partial")
        save_file(
            {"features": features.features.half().contiguous(), "labels": features.labels.contiguous()},
            str(partial),
            metadata={"relpaths": json.dumps(features.relpaths), "split": split,
                      "skipped": json.dumps([s.to_dict() for s in features.skipped])},
        )
        os.replace(partial, path)
        return path


def cached_features(
    spec: BackboneSpec, backbone: Callable[[], Backbone], cache: FeatureCache, split: str,
    samples: list[Sample], views: int, seed: int, progress: bool, scale: tuple[float, float] = AUGMENT_SCALE,
    decoding: DecodeOptions = DecodeOptions(),
) -> FeatureSet:
    """Features from the cache, or encoded (and cached) with ``backbone()``, which is only called on a miss.

    Either way the caller gets what the cache stores (fp16, read back), so the run that encodes the features
    trains and measures on exactly what later re-runs, ``eval`` and ``calibrate`` read.
    """
    key = cache_key(spec, samples, views, seed, scale, decoding)
    found = cache.load(split, key)
    if found is not None:
        log.debug("reusing cached %s features (%d images) from %s", split, len(found.relpaths), cache.path(split, key))
        return found
    features = extract_features(backbone(), samples, views=views, seed=seed, description=f"{split} features",
                                progress=progress, scale=scale, decoding=decoding)
    cache.save(split, key, features)
    if features.skipped:  # later commands leave the run's skipped files out (skipped.json): the same features
        failed = {s.path for s in features.skipped}
        decoded = [sample for sample in samples if sample.path not in failed]
        cache.save(split, cache_key(spec, decoded, views, seed, scale, decoding), FeatureSet(
            features.features, features.labels, features.relpaths))
    stored = cache.load(split, key)
    if stored is None:
        raise ClipedgeError(f"feature cache {cache.path(split, key)}: could not be read back right after writing it")
    return stored
