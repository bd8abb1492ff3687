"""Feature cache: fp16 safetensors keyed by backbone + exact image list + transform.

Encoding images is the only slow step of few-shot training; heads train on
cached features in seconds. The key covers everything that changes a feature
(architecture, weights, preprocessing, how files are decoded, each file's path,
size and mtime, the augmentation and its seed), so a hit is safe to reuse once
it verifies: each file carries a checksum of its contents and is checked against
the images it is for, and one that fails either check is recomputed. Files that
failed to decode are stored with the entry, and an entry with failures is also
stored under the key of the files that did decode: the list later steps read
from the run's split.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clipedge.core.atomic import raise_if_disk_full
from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, SkippedFile

from .backbone import Backbone, BackboneSpec
from .data import Sample
from .features import AUGMENT_SCALE, FeatureSet, extract_features

log = logging.getLogger(__name__)

#: safetensors metadata entry holding the file's checksum (see :func:`checksum`)
CHECKSUM_KEY = "sha256"


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
    """A folder of ``<split>-<key>.safetensors`` files, each carrying the SHA-256 of its contents.

    The key says which images a file is for; the checksum says the file still holds what was written. A file
    that does not verify (a flipped bit, a file copied over another) is recomputed with a one-line notice, never
    trusted: its labels index the text classifier and its features feed the head."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, split: str, key: str) -> Path:
        return self.folder / f"{split}-{key}.safetensors"

    def load(self, split: str, key: str) -> FeatureSet | None:
        """The stored features, or None when there are none or they do not verify (with a notice)."""
        path = self.path(split, key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if CHECKSUM_KEY not in metadata:
                return _recompute(path, "it carries no checksum")
            features, labels, relpaths, skipped = (tensors["features"], tensors["labels"], metadata["relpaths"],
                                                   metadata["skipped"])
            if metadata[CHECKSUM_KEY] != checksum(features, labels, relpaths, skipped):
                return _recompute(path, "its checksum does not match its contents")
            return FeatureSet(features.float(), labels, json.loads(relpaths),
                              [SkippedFile.from_dict(entry) for entry in json.loads(skipped)])
        except Exception as error:  # noqa: BLE001 - a damaged cache entry is simply recomputed
            return _recompute(path, f"unreadable: {type(error).__name__}")

    def save(self, split: str, key: str, features: FeatureSet) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(split, key)
        partial = path.with_suffix(".partial")
        stored, labels = features.features.half().contiguous(), features.labels.contiguous()
        relpaths, skipped = json.dumps(features.relpaths), json.dumps([s.to_dict() for s in features.skipped])
        try:
            save_file({"features": stored, "labels": labels}, str(partial), metadata={
                "relpaths": relpaths, "split": split, "skipped": skipped,
                CHECKSUM_KEY: checksum(stored, labels, relpaths, skipped)})
        except BaseException as error:
            partial.unlink(missing_ok=True)
            raise_if_disk_full(error, path, "feature cache")
            raise
        os.replace(partial, path)
        return path


def checksum(features: torch.Tensor, labels: torch.Tensor, relpaths: str, skipped: str) -> str:
    """SHA-256 over both tensors (dtype, shape, bytes) and the metadata that gives them meaning."""
    digest = hashlib.sha256()
    for tensor in (features, labels):
        digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update(relpaths.encode())
    digest.update(skipped.encode())
    return digest.hexdigest()


def _recompute(path: Path, why: str) -> None:
    """The one-line notice of a cache file that is not used; the caller encodes the images again."""
    log.warning("feature cache %s does not verify (%s); recomputing it", path, why)
    return None


def mismatch(found: FeatureSet, samples: list[Sample], views: int, embed_dim: int) -> str | None:
    """Why a verified file is still not the features of ``samples`` (a file copied over another), or None."""
    failed = {s.path for s in found.skipped}
    expected = [s for s in samples if s.path not in failed]
    shape = [views, len(expected), embed_dim] if views else [len(expected), embed_dim]
    if list(found.features.shape) != shape:
        return f"features of shape {list(found.features.shape)} where {len(expected)} images need {shape}"
    if found.relpaths != [s.relpath for s in expected] or found.labels.tolist() != [s.label for s in expected]:
        return "its images or labels are not the ones this split lists"
    return None


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
    problem = None if found is None else mismatch(found, samples, views, spec.embed_dim)
    if problem is not None:
        found = _recompute(cache.path(split, key), problem)
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
    if stored is None or mismatch(stored, samples, views, spec.embed_dim) is not None:
        raise ClipedgeError(f"feature cache {cache.path(split, key)}: could not be read back right after writing it")
    return stored
