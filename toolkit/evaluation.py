"""``clipedge eval``: accuracy of a run on its own test split or on another labelled folder.

The JSON report (``--json``) is a stable schema, documented in docs/training.md:

    {"run": str, "method": str, "data": str, "split": str, "num_images": int,
     "top1": float, "top5": float, "top5_k": int,
     "per_class": [{"class": str, "accuracy": float|null, "count": int}],
     "confusion_matrix": [[int]], "confusion_matrix_png": str,
     "predictions": [{"path": str, "label": int, "predicted": int}],
     "skipped_files": [{"path": str, "reason": str, "detail": str}]}   # files that could not be decoded
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.schemas import SCHEMA_VERSIONS

from .backbone import load_backbone_from_spec
from .data import LabelledImages, load_labelled_images
from .devices import resolve_device
from .feature_cache import FeatureCache, cached_features
from .features import FeatureSet
from .figures import pyplot, save_png
from .run_dir import CACHE_DIR, Run, load_run
from .run_features import RunFeatures, run_decoding

CONFUSION_PNG = "confusion_matrix.png"


@dataclass
class EvalReport:
    run: str
    method: str
    data: str
    split: str
    num_images: int
    top1: float
    top5: float
    top5_k: int
    per_class: list[dict[str, Any]]
    confusion_matrix: list[list[int]]
    confusion_matrix_png: str
    predictions: list[dict[str, Any]]
    skipped_files: list[dict[str, str]]

    def to_json(self) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSIONS["eval"], **asdict(self)}, indent=2)


def _features_for(run: Run, data: Path | None, split_file: Path | None, device: str, progress: bool) -> tuple[LabelledImages, FeatureSet]:
    """The run's own test features, or features of a labelled folder with the run's classes."""
    if data is None:
        features = RunFeatures(run, device, progress)
        return features.data, features.split("test")
    dataset = load_labelled_images(data, split_file, decoding=run_decoding(run))
    if dataset.class_names != run.class_names:
        raise ClipedgeError(
            f"DATA {data}: classes {dataset.class_names[:5]} do not match the run's {run.class_names[:5]}"
        )
    # A folder without a split file is evaluated whole: it is new data, not the training folder.
    samples = dataset.splits["test"] if split_file else [s for split in dataset.splits.values() for s in split]
    samples = sorted(samples, key=lambda s: s.relpath)
    spec = run.backbone_spec
    features = cached_features(
        spec, lambda: load_backbone_from_spec(spec, device=resolve_device(device)), FeatureCache(run.path / CACHE_DIR),
        "eval", samples, 0, 0, progress, decoding=run_decoding(run),
    )
    return dataset, features


def save_confusion_png(matrix: torch.Tensor, class_names: list[str], path: Path, title: str) -> None:
    plt = pyplot()
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    totals = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    image = ax.imshow((matrix / totals).numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    save_png(fig, path)


@torch.no_grad()
def evaluate(run_path: str | Path, data: str | Path | None = None, split: str | Path | None = None,
             device: str = "auto", progress: bool = True) -> EvalReport:
    """Evaluate a run; without ``data`` it uses the run's own held-out test images."""
    run = load_run(run_path)
    dataset, features = _features_for(run, Path(data) if data else None, Path(split) if split else None, device, progress)
    if not features.relpaths:
        raise ClipedgeError(f"RUN {run.path}: no test images to evaluate (pass DATA with labelled images)")
    logits = run.head(features.features)
    labels = features.labels
    num_classes = len(run.class_names)
    k = min(5, num_classes)
    predicted = logits.argmax(dim=1)
    top5 = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    matrix.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    counts = matrix.sum(dim=1)
    per_class = [
        {"class": name, "accuracy": (matrix[i, i] / counts[i]).item() if counts[i] else None, "count": int(counts[i])}
        for i, name in enumerate(run.class_names)
    ]
    png = run.path / CONFUSION_PNG
    save_confusion_png(matrix, run.class_names, png, f"{run.method} on {dataset.root.name}")
    return EvalReport(
        run=str(run.path),
        method=run.method,
        data=str(dataset.root),
        split="test" if data is None or split else "all",
        num_images=len(labels),
        top1=(predicted == labels).float().mean().item(),
        top5=top5,
        top5_k=k,
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
        confusion_matrix_png=str(png),
        predictions=[
            {"path": relpath, "label": int(t), "predicted": int(p)}
            for relpath, t, p in zip(features.relpaths, labels.tolist(), predicted.tolist())
        ],
        skipped_files=[s.to_dict() for s in (dataset.skipped if data else []) + features.skipped],
    )
