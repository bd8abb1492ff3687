"""The class bank an adaptable export starts with: the trained head as data, and the space it belongs to.

Rows, bias, scale and the Tip-Adapter cache come from ``head.readout()``, so the bank applied to the model's
``embeddings`` is the head (the export gate holds it to the fused model). The run's training images are in it
too, as per-class sums of their adapted embeddings and the shared within-class scatter: a class added on the
device from four photos cannot estimate a D×D covariance, but it can borrow the one the training classes give
(GDA's shared covariance), and prototypes of the trained classes stay recomputable.

The fingerprint (``space``) names what makes embeddings comparable: the backbone, where its weights came from,
a hash of those weights as loaded, the width, and the image model file. A bank is only valid beside that model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipedge.backbone import Backbone
from clipedge.feature_cache import FeatureCache, cached_features
from clipedge.features import AUGMENT_SCALE
from clipedge.heads import Readout
from clipedge.run_dir import CACHE_DIR, Run
from clipedge.run_features import run_data, run_decoding
from clipedge.runtime.classes import ClassBank

from .metadata import calibration_of

HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks (an fp32 ViT-L model is over a gigabyte)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict as loaded: for each tensor in sorted key order its name, dtype, shape and
    raw bytes. Independent of the checkpoint's file format and of how the weights were found."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def embedding_space(backbone: Backbone, image_model: Path) -> dict[str, Any]:
    """The bank's ``space``: what an image embedding of ``image_model`` means."""
    spec = backbone.spec
    return {"backbone": spec.name, "pretrained": spec.pretrained, "weights_sha256": weights_sha256(backbone.model),
            "dim": int(spec.embed_dim), "image_model_sha256": file_sha256(image_model)}


def rows_are_text(run: Run, readout: Readout) -> bool:
    """Whether the trained rows are the head's text classifier: unit rows under CLIP's logit scale, the form a class
    added by name takes, so the device scales it like them. True for zero-shot, CLIP-Adapter and Tip-Adapter(-F),
    and for ZS-LP and CLAP, which fold their learned prototypes back into that form; False for rows of another
    scale (the linear probe, LP++, GDA), beside which the runtime rescales a named class."""
    return readout.weights.shape == run.head.text_weights.shape and torch.equal(readout.weights, run.head.text_weights)


@torch.no_grad()
def training_image_statistics(run: Run, backbone: Backbone, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class sums and counts of the train images' adapted embeddings, and the within-class scatter
    Σ (e − μ_c)(e − μ_c)ᵀ; from eval-transform features (what the device's model computes), cached by the run."""
    spec = run.backbone_spec
    features = cached_features(spec, lambda: backbone, FeatureCache(run.path / CACHE_DIR), "train",
                               run_data(run).splits["train"], 0, 0, progress, AUGMENT_SCALE, run_decoding(run))
    embeddings = run.head.embed(features.features.float()).double().numpy()
    labels = features.labels.numpy()
    count, dim = len(run.class_names), embeddings.shape[1]
    sums, counts = np.zeros((count, dim)), np.bincount(labels, minlength=count).astype(np.int64)
    np.add.at(sums, labels, embeddings)
    means = sums / np.maximum(counts, 1)[:, None]
    centred = embeddings - means[labels]
    return sums.astype(np.float32), counts, (centred.T @ centred).astype(np.float32)


def initial_bank(run: Run, backbone: Backbone, space: dict[str, Any], text_model: dict[str, str] | None,
                 progress: bool = True) -> ClassBank:
    """The bank of a freshly exported adaptable model: the trained classes, revision 0."""
    readout = run.head.readout()
    cache = readout.cache
    text_rows = rows_are_text(run, readout)
    templates = list(run.manifest.get("templates") or [])
    sums, counts, scatter = training_image_statistics(run, backbone, progress)
    calibration = calibration_of(run)
    rejection = ({"score": calibration.get("rejection_score", "max_prob"), "threshold": float(calibration["threshold"])}
                 if "threshold" in calibration else None)
    provenance = [{"source": "trained", "images": int(images), "prompt": None,
                   "templates": len(templates) if text_rows else 0, "revision": 0} for images in counts]
    dim = readout.weights.shape[1]
    return ClassBank(
        names=run.class_names, weights=readout.weights.float().numpy(), bias=readout.bias.float().numpy(),
        logit_scale=float(readout.scale),
        cache_keys=cache.keys.float().numpy() if cache else np.zeros((0, dim), np.float32),
        cache_labels=cache.labels.long().numpy() if cache else np.zeros(0, np.int64),
        cache_alpha=float(cache.alpha) if cache else None, cache_beta=float(cache.beta) if cache else None,
        image_sums=sums, image_counts=counts, scatter=scatter, provenance=provenance, head_kind=run.method,
        rows="text" if text_rows else "learned", temperature=float(calibration.get("temperature") or 1.0),
        rejection=rejection, space=space, text_model=text_model, templates=templates, revision=0,
    )
