"""Pretrained weights on machines without a network: which Hugging Face files open_clip reads, and where.

Robots and factory servers are air-gapped, so users copy a Hugging Face cache
onto them. open_clip resolves every pretrained tag (``ViT-B-32`` +
``openai`` → ``timm/vit_base_patch32_clip_224.openai``) and every
``hf-hub:ORG/REPO`` backbone to files of a hub repository, which
``huggingface_hub`` looks up in ``$HF_HUB_CACHE/models--ORG--REPO/``
(``refs/main`` names a snapshot, ``snapshots/REV/`` holds the files). This
module answers, before open_clip tries and after it has run, whether those
files are there, so a missing cache is reported as the repository and folder
to copy, never as a download error, and an ``hf-hub:`` model whose weights
are missing is refused rather than silently left at random initialisation
(open_clip only logs a warning for that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
from huggingface_hub import constants, try_to_load_from_cache
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME


@dataclass(frozen=True)
class HubFiles:
    """The hub files open_clip needs for one backbone: a weights file (the first of ``weights`` found wins, as
    open_clip prefers safetensors) and, for ``hf-hub:`` models, the config."""

    repo: str
    weights: tuple[str, ...]
    config: str | None = None

    @property
    def cache_folder(self) -> Path:
        """Where huggingface_hub keeps this repository (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``)."""
        return Path(constants.HF_HUB_CACHE) / f"models--{self.repo.replace('/', '--')}"

    def cached_weights(self) -> str | None:
        return next((path for path in map(self._cached, self.weights) if path), None)

    def is_cached(self) -> bool:
        return self.cached_weights() is not None and (self.config is None or self._cached(self.config) is not None)

    def _cached(self, filename: str) -> str | None:
        found = try_to_load_from_cache(self.repo, filename)
        return found if isinstance(found, str) else None  # also a sentinel when the hub said "no such file"

    def missing(self, option: str) -> str:
        """The one line for weights that are neither cached nor downloadable: what to copy, and where."""
        files = " and ".join(filter(None, [self.config, " or ".join(self.weights)]))
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        return (f"{option}: the weights are not in the Hugging Face cache and could not be downloaded{offline}; "
                f"copy hub repository {self.repo} ({files}) from a connected machine's cache into "
                f"{self.cache_folder}; or pass --pretrained path/to/checkpoint.safetensors, or --pretrained none for random weights")


def hub_offline() -> bool:
    """Whether huggingface_hub may not reach the network (``HF_HUB_OFFLINE=1``, read when it was imported)."""
    return bool(constants.HF_HUB_OFFLINE)


def _weight_names(filename: str) -> tuple[str, ...]:
    """open_clip's download order: the safetensors alternative of a pickle name first, then the name itself."""
    if filename == HF_WEIGHTS_NAME:
        return HF_SAFE_WEIGHTS_NAME, filename
    if filename.endswith((".bin", ".pth")):
        return filename[:-4] + ".safetensors", filename
    return (filename,)


def hub_files(name: str, tag: str | None) -> HubFiles | None:
    """The hub files behind ``--backbone name --pretrained tag`` (or ``hf-hub:ORG/REPO``); None when open_clip would
    fetch them from elsewhere (a plain URL) or there is nothing to fetch."""
    prefix = open_clip.factory.HF_HUB_PREFIX
    if name.startswith(prefix):
        return HubFiles(name[len(prefix):], _weight_names(HF_WEIGHTS_NAME), HF_CONFIG_NAME)
    if not tag:
        return None
    location = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if not location:
        return None
    repo, filename = os.path.split(location)  # "org/repo/" means the default file name
    return HubFiles(repo, _weight_names(filename or HF_WEIGHTS_NAME))
