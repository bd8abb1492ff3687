"""ZS-LP (Silva-Rodríguez et al., CVPR 2024, "A Closer Look at the Few-Shot Adaptation of Large
Vision-Language Models"): a linear probe whose class rows start at the text classifier.

logits = scale · norm(f) · norm(W)ᵀ with W initialised to T and trained by
cross-entropy on augmented support features. CLAP's point is that one fixed
configuration, with nothing tuned on val, serves every task; this is that
configuration as the official code (jusiro/CLAP, ``SGD_lr1e-1_B256_ep300``) runs it:
SGD lr 0.1 (momentum 0.9, no weight decay), 300 epochs of batch 256, a constant
1e-5 warm-up epoch, then a cosine stepped per epoch, on 20 augmented views per image
(Dassl's random resized crop, scale 0.08–1, + flip). Each epoch shows every image
once as one of its views, as the official epoch draws as many samples as there are images.

Once trained, norm(W) replaces T: at inference the head is zero-shot CLIP with learned rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import FewShotProblem, Head, Readout
from .options import OptimisedOptions
from .recipe import DASSL_SCALE, Augmentation, Recipe
from .registry import register_head
from .training_loop import train_head

RECIPE = Recipe("sgd", lr=0.1, epochs=300, batch_size=256, weight_decay=0.0, momentum=0.9,
                warmup_epochs=1, warmup_lr=1e-5, per_epoch_schedule=True)
AUGMENTATION = Augmentation(20, DASSL_SCALE)


@dataclass(kw_only=True)
class ZsLpOptions(OptimisedOptions):
    def augmentation(self) -> Augmentation:
        return Augmentation(self.views or AUGMENTATION.views, AUGMENTATION.scale)

    def training_recipe(self) -> Recipe:
        return RECIPE.overridden(self.epochs, self.lr, self.batch_size)


@register_head
class ZsLpHead(Head):
    """logits = scale · norm(f) · norm(W)ᵀ, W learned from W₀ = T."""

    kind = "zs-lp"
    trains = True
    Options = ZsLpOptions
    selection = "nothing chosen: CLAP's fixed configuration (SGD lr 0.1, 300 epochs, batch 256, 20 views)"

    def __init__(self, text_weights: torch.Tensor, logit_scale: float):
        super().__init__(text_weights, logit_scale)
        self.prototypes: nn.Parameter | None = None  # only while training; folded into W afterwards

    def class_weights(self) -> torch.Tensor:
        return self.text_weights if self.prototypes is None else F.normalize(self.prototypes, dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(features, dim=-1) @ self.class_weights().t()

    @torch.no_grad()
    def readout(self) -> Readout:
        readout = super().readout()
        readout.weights = self.class_weights().detach().clone()
        return readout

    def fold_prototypes(self) -> None:
        """W ← norm(prototypes): afterwards the head is the zero-shot form with learned rows."""
        if self.prototypes is not None:
            with torch.no_grad():
                self.text_weights.copy_(self.class_weights())
            self.prototypes = None

    def penalty(self, problem: FewShotProblem) -> Callable[[], torch.Tensor] | None:
        """The term added to cross-entropy; none for ZS-LP (CLAP adds its constraint)."""
        return None

    @classmethod
    def fit(cls, problem: FewShotProblem, options: ZsLpOptions) -> ZsLpHead:
        torch.manual_seed(options.seed)
        head = cls(problem.text_weights, problem.logit_scale)
        head.prototypes = nn.Parameter(problem.text_weights.detach().clone().float())
        head.text_weights.requires_grad_(False)
        penalty = head.penalty(problem)
        train_head(head, problem, options, options.training_recipe(), description=cls.kind, penalty=penalty)
        head.fold_prototypes()
        return head.eval()
