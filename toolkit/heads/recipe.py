"""Training recipes: an optimiser, its schedule, and the augmented views the head trains on.

A recipe is data, not code, so a method can offer the official one beside a
faster variant and the manifest can say exactly which ran. Two schedule
granularities exist because the references differ: Dassl (CoOp, CLIP-Adapter)
steps its cosine schedule once per epoch after a constant warm-up epoch, the
Tip-Adapter-F script once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

#: Tip-Adapter's cache augmentation (RandomResizedCrop scale 0.5–1 + flip), also clipedge's fast recipes'
TIP_ADAPTER_SCALE = (0.5, 1.0)
#: Dassl's default ``INPUT.RRCROP_SCALE``, which CoOp's configs (and so CLIP-Adapter's) keep
DASSL_SCALE = (0.08, 1.0)


@dataclass(frozen=True)
class Augmentation:
    """Which training features a head sees: ``views`` random-resized-crop + flip views at ``scale``,
    or, with ``views == 0``, one eval-transform (resize + centre crop) feature per image."""

    views: int
    scale: tuple[float, float] = TIP_ADAPTER_SCALE

    def to_record(self) -> dict:
        return {"views": self.views, "augment_scale": list(self.scale) if self.views else None}


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule of a head's training loop."""

    optimizer: str  # "sgd" or "adamw"
    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    momentum: float = 0.0
    eps: float = 1e-8
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    per_epoch_schedule: bool = False

    def overridden(self, epochs: int | None = None, lr: float | None = None, batch_size: int | None = None) -> Recipe:
        """The recipe with the user's explicit values in place of its own."""
        return replace(self, epochs=epochs or self.epochs, lr=lr or self.lr, batch_size=batch_size or self.batch_size)

    def optimizer_for(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        # The fused kernel matters at scale: Tip-Adapter-F updates 16M key parameters per step at ImageNet scale.
        return torch.optim.AdamW(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=True)

    def learning_rate(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Constant warm-up, then cosine from ``lr`` towards 0 (per epoch as Dassl steps it, or per batch).

        Dassl restarts the count after warm-up (``WARMUP_RECOUNT``) with the cosine's period still the full
        epoch count, so its last epoch ends just above zero; the per-epoch form reproduces that.
        """
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        if self.per_epoch_schedule:
            progress = (epoch - self.warmup_epochs) / self.epochs
        else:
            done = (epoch - self.warmup_epochs) * steps_per_epoch + step
            progress = done / ((self.epochs - self.warmup_epochs) * steps_per_epoch)
        return 0.5 * self.lr * (1 + math.cos(math.pi * progress))
