"""``clipedge train``: data → few-shot sample → cached features → text classifier → head → run directory.

Every option is validated before the first slow step, so a typo fails in
milliseconds, and the run directory appears only once it is complete.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import MANIFEST_KEY as DECODING_KEY
from clipedge.core.images import DecodeOptions

from .backbone import Backbone, load_backbone
from .data import LabelledImages, Sample, load_labelled_images, missing_splits, sample_few_shot
from .devices import resolve_device
from .feature_cache import FeatureCache, cached_features
from .features import FeatureSet, as_views
from .heads import FewShotProblem, Head, TrainOptions, head_class, head_options
from .heads.base import accuracy
from .heads.recipe import Augmentation
from .heads.selection import AUTO, Selection, auto_augmentation, check_auto_options, select_head
from .heads.zero_shot import ZeroShotHead
from .prompts import build_text_classifier, resolve_templates
from .run_dir import (
    CACHE_DIR,
    FORMAT_VERSION,
    SKIPPED_FILE,
    SPLIT_FILE,
    check_output_dir,
    skipped_entries,
    staged_run_dir,
    write_run_files,
    write_skipped,
)
from .version import __version__

log = logging.getLogger(__name__)

@dataclass
class TrainConfig:
    """Everything ``clipedge train`` accepts; field names match the CLI options."""

    data: Path
    out: Path
    method: str = "clip-adapter"
    backbone: str = "clipedge-tiny"
    pretrained: str | None = None
    shots: int = 16
    seed: int = 1
    split: Path | None = None
    split_seed: int = 0
    templates: str = "single"
    # The method's own options (None: its recipe's default); each method refuses those it does not take.
    views: int | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    alpha: float | str | None = None
    branch: str | None = None
    recipe: str | None = None
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    cache_dir: Path | None = None
    progress: bool = True
    exif_transpose: bool = True
    max_image_pixels: int | None = None

    @property
    def decoding(self) -> DecodeOptions:
        return DecodeOptions(self.exif_transpose, self.max_image_pixels)


@dataclass
class TrainResult:
    run_dir: Path
    method: str
    shots: int
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    #: with ``method="auto"``: every candidate's val top-1 (or its error), in the order they ran
    candidates: list[dict[str, Any]] | None = None


@dataclass
class _Features:
    train: FeatureSet
    val: FeatureSet
    test: FeatureSet


METHOD_OPTIONS = ("views", "epochs", "lr", "batch_size", "alpha", "branch", "recipe")


def _validate(config: TrainConfig, device: str) -> tuple[type[Head] | None, TrainOptions | None, Augmentation, list[str]]:
    """The head class, its validated options, the training features it needs and the templates; every
    method-specific check is the head's. With ``auto`` there is no one head yet: only the shared features."""
    head_cls = None if config.method == AUTO else head_class(config.method)
    if config.shots < 1:
        raise ClipedgeError(f"--shots {config.shots}: expected a positive number of images per class")
    if config.max_image_pixels is not None and config.max_image_pixels < 1:
        raise ClipedgeError(f"--max-image-pixels {config.max_image_pixels}: expected a positive number of pixels")
    given = {name: getattr(config, name) for name in METHOD_OPTIONS}
    if head_cls is None:
        check_auto_options(given)
        options, augmentation = None, auto_augmentation(config.views)
    else:
        options = head_options(config.method, seed=config.seed, device=device, precision=config.precision,
                               progress=config.progress, **given)
        augmentation = options.augmentation()
    check_output_dir(config.out, config.overwrite)
    return head_cls, options, augmentation, resolve_templates(config.templates)


def _split_json(data: LabelledImages, few_shot: list[Sample], features: _Features) -> dict[str, list]:
    """The exact images used, in CoOp's split format, so a run can be re-trained or re-evaluated; files that
    failed to decode are left out, so later steps never load them."""
    failed = {s.path for split in (features.train, features.val, features.test) for s in split.skipped}

    def rows(samples: list[Sample]) -> list:
        return [[s.relpath, s.label, data.class_names[s.label]] for s in samples if s.path not in failed]

    return {"train": rows(few_shot), "val": rows(data.splits["val"]), "test": rows(data.splits["test"])}


def _manifest(config: TrainConfig, backbone: Backbone, data: LabelledImages, head: Head, templates: list[str],
              features: _Features, options: TrainOptions, augmentation: Augmentation, metrics: dict, timings: dict,
              selection: Selection | None) -> dict[str, Any]:
    training = {**options.to_record(), **augmentation.to_record(), "precision": config.precision,
                "method": config.method}
    return {
        "format_version": FORMAT_VERSION,
        "clipedge_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": backbone.spec.to_dict(),
        "class_names": data.class_names,
        "templates": templates,
        "head": {"kind": head.kind, "hparams": head.hparams()},
        "data": {
            "root": str(data.root),
            "split_file": SPLIT_FILE,
            "source_split": str(config.split) if config.split else None,
            "split_seed": config.split_seed,
            "fingerprint": data.fingerprint(),
            "shots": config.shots,
            "counts": {"train": len(features.train.relpaths), "val": len(features.val.relpaths), "test": len(features.test.relpaths)},
            "skipped_files": len(_skipped(data, features)),
            "skipped_list": SKIPPED_FILE,
            "notes": missing_splits(data),
        },
        DECODING_KEY: config.decoding.to_manifest(),
        "seed": config.seed,
        "training": training,
        "metrics": metrics,
        "timings_s": timings,
        **({"auto": selection.to_record()} if selection else {}),
        "versions": {"clipedge": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()},
    }


def _skipped(data: LabelledImages, features: _Features) -> list[dict[str, str]]:
    """skipped.json rows: files the scan refused, then files that failed to decode during feature extraction."""
    decoded = [s for split in (features.train, features.val, features.test) for s in split.skipped]
    return skipped_entries(data.skipped, "scan") + skipped_entries(decoded, "features")


def train(data: str | Path, out: str | Path, **options: Any) -> TrainResult:
    """Train a head on few-shot features and write a run directory; see :class:`TrainConfig`."""
    config = TrainConfig(data=Path(data), out=Path(out), **options)
    device = resolve_device(config.device)
    head_cls, train_options, augmentation, templates = _validate(config, device)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    dataset = load_labelled_images(config.data, config.split, config.split_seed, config.decoding)
    for note in missing_splits(dataset):
        log.warning("DATA %s: %s", config.data, note)
    few_shot = sample_few_shot(dataset.splits["train"], config.shots, config.seed, dataset.class_names)
    backbone = load_backbone(config.backbone, config.pretrained, device=device)
    timings["load"] = time.perf_counter() - started

    with staged_run_dir(config.out, config.overwrite) as staging:
        cache = FeatureCache(config.cache_dir or staging / CACHE_DIR)
        mark = time.perf_counter()
        features = _Features(
            train=as_views(cached_features(backbone.spec, lambda: backbone, cache, "train", few_shot, augmentation.views,
                                           config.seed, config.progress, augmentation.scale, config.decoding)),
            val=cached_features(backbone.spec, lambda: backbone, cache, "val", dataset.splits["val"], 0, 0,
                                config.progress, decoding=config.decoding),
            test=cached_features(backbone.spec, lambda: backbone, cache, "test", dataset.splits["test"], 0, 0,
                                 config.progress, decoding=config.decoding),
        )
        timings["features"] = time.perf_counter() - mark

        mark = time.perf_counter()
        text_weights = build_text_classifier(backbone.encode_texts, dataset.class_names, templates)
        timings["text"] = time.perf_counter() - mark

        problem = FewShotProblem(
            text_weights, backbone.logit_scale, features.train.features, features.train.labels,
            features.val.features, features.val.labels,
        )
        mark = time.perf_counter()
        selection = None
        if head_cls is None:
            common = {"seed": config.seed, "device": device, "precision": config.precision}
            selection = select_head(problem, common, progress=config.progress)
            head, train_options = selection.head, selection.options
        else:
            head = head_cls.fit(problem, train_options)
        timings["head"] = time.perf_counter() - mark

        metrics = _metrics(head, ZeroShotHead.fit(problem, TrainOptions()), features)
        timings["total"] = time.perf_counter() - started
        manifest = _manifest(config, backbone, dataset, head, templates, features, train_options, augmentation, metrics,
                             timings, selection)
        write_run_files(staging, manifest, head)
        (staging / SPLIT_FILE).write_text(json.dumps(_split_json(dataset, few_shot, features)) + "\n", encoding="utf-8")
        write_skipped(staging, _skipped(dataset, features))
    candidates = manifest["auto"]["candidates"] if selection else None
    return TrainResult(config.out, head.kind, config.shots, metrics, timings, candidates)


@torch.no_grad()
def _metrics(head: Head, zero_shot: Head, features: _Features) -> dict[str, float | None]:
    def top1(model: Head, split: FeatureSet) -> float | None:
        return accuracy(model(split.features), split.labels) if len(split.relpaths) else None

    return {
        "val_top1": top1(head, features.val),
        "test_top1": top1(head, features.test),
        "zero_shot_test_top1": top1(zero_shot, features.test),
    }
