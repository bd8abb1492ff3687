"""CLIP-Adapter (Gao et al., 2021): a residual bottleneck adapter on frozen CLIP features.

A(x) = ReLU(W2 · ReLU(W1 · x)), bias-free, D → D/r → D with r = 4, blended as
x' = α·A(x) + (1−α)·x. The visual branch adapts raw image features before
normalisation, as the official code does; the text branch adapts the class
embeddings, which are constants after training, so it is folded into a plain W
and export never sees it.

Two training recipes (``--recipe``), measured against each other in
BENCHMARKS.md ("Recipes"):

- ``official``: the official code's, which is CoOp's ``configs/trainers/CoOp/rn50.yaml``
  run by Dassl: SGD lr 0.002, momentum 0.9, weight decay 5e-4, 200 epochs of
  batch 32, one warm-up epoch at a constant 1e-5, then a cosine stepped once
  per epoch; images under Dassl's random resized crop (scale 0.08–1) + flip.
  The official code draws a fresh crop every epoch; here each epoch draws one
  of ``OFFICIAL_VIEWS`` cached views per image, so a view recurs about
  200 / OFFICIAL_VIEWS times.
- ``fast``: AdamW lr 5e-3 (weight decay 0.01), cosine per batch, no warm-up,
  batch 256 above 4,096 images, 10 views at scale 0.5–1 (Tip-Adapter's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from clipedge.core.errors import ClipedgeError

from .base import FewShotProblem, Head, Readout, val_accuracy
from .options import OptimisedOptions, check_choice
from .recipe import DASSL_SCALE, TIP_ADAPTER_SCALE, Augmentation, Recipe
from .registry import register_head
from .training_loop import train_head

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.2  # official code; the paper prefers ~0.6 on fine-grained data
ALPHA_GRID = (0.1, 0.2, 0.4, 0.6, 0.8)
REDUCTION = 4
BRANCHES = ("visual", "text", "both")
OFFICIAL_VIEWS = 50
RECIPES = {
    "official": Recipe("sgd", lr=2e-3, epochs=200, batch_size=32, weight_decay=5e-4, momentum=0.9,
                       warmup_epochs=1, warmup_lr=1e-5, per_epoch_schedule=True),
    "fast": Recipe("adamw", lr=5e-3, epochs=200, batch_size=32, weight_decay=0.01),
}
AUGMENTATIONS = {"official": Augmentation(OFFICIAL_VIEWS, DASSL_SCALE), "fast": Augmentation(10, TIP_ADAPTER_SCALE)}
DEFAULT_RECIPE = "official"  # fast is not better on val: BENCHMARKS.md "Recipes"
# fast recipe: above this many training images (ImageNet 16-shot is 16,000) batch 32 only adds per-step overhead.
LARGE_DATA_IMAGES, LARGE_DATA_BATCH = 4096, 256


@dataclass(kw_only=True)
class ClipAdapterOptions(OptimisedOptions):
    alpha: float | str | None = None  # a number in [0, 1], "auto" (chosen on val), or None for DEFAULT_ALPHA
    branch: str = "visual"
    recipe: str = DEFAULT_RECIPE

    def validate(self) -> None:
        super().validate()
        check_choice("recipe", self.recipe, tuple(RECIPES))
        check_choice("branch", self.branch, BRANCHES)
        if isinstance(self.alpha, (int, float)) and not 0 <= self.alpha <= 1:
            raise ClipedgeError(f"--alpha {self.alpha}: CLIP-Adapter's blend ratio must lie in [0, 1]")
        if isinstance(self.alpha, str) and self.alpha != "auto":
            raise ClipedgeError(f"--alpha {self.alpha}: expected a number or 'auto'")

    def augmentation(self) -> Augmentation:
        default = AUGMENTATIONS[self.recipe]
        return Augmentation(self.views or default.views, default.scale)

    def training_recipe(self, num_images: int) -> Recipe:
        recipe = RECIPES[self.recipe]
        if self.recipe == "fast" and num_images > LARGE_DATA_IMAGES:
            recipe = recipe.overridden(batch_size=LARGE_DATA_BATCH)
        return recipe.overridden(self.epochs, self.lr, self.batch_size)


class Adapter(nn.Sequential):
    def __init__(self, dim: int, reduction: int = REDUCTION):
        super().__init__(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(),
        )


def blend(x: torch.Tensor, adapter: nn.Module, alpha: float) -> torch.Tensor:
    return alpha * adapter(x) + (1 - alpha) * x


@register_head
class ClipAdapterHead(Head):
    """logits = scale · norm(α·A(f) + (1−α)·f) · Wᵀ"""

    kind = "clip-adapter"
    chosen_on_val = "nothing (α with --alpha auto)"
    selection = "fixed recipe and α = 0.2; with --alpha auto, α on val over 0.1, 0.2, 0.4, 0.6, 0.8"
    Options = ClipAdapterOptions

    def __init__(
        self,
        text_weights: torch.Tensor,
        logit_scale: float,
        alpha: float = DEFAULT_ALPHA,
        reduction: int = REDUCTION,
        branch: str = "visual",
    ):
        super().__init__(text_weights, logit_scale)
        if branch not in BRANCHES:
            raise ClipedgeError(f"--branch {branch}: expected one of {', '.join(BRANCHES)}")
        self.alpha, self.reduction, self.branch = float(alpha), reduction, branch
        dim = text_weights.shape[1]
        self.visual_adapter = Adapter(dim, reduction) if branch in ("visual", "both") else None
        self.text_adapter: Adapter | None = None  # only while training; folded into W afterwards

    def class_weights(self) -> torch.Tensor:
        if self.text_adapter is None:
            return self.text_weights
        return F.normalize(blend(self.text_weights, self.text_adapter, self.alpha), dim=-1)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        if self.visual_adapter is not None:
            features = blend(features, self.visual_adapter, self.alpha)
        return F.normalize(features, dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.embed(features) @ self.class_weights().t()

    @torch.no_grad()
    def readout(self) -> Readout:
        """W is the (text-adapted) class embeddings; the visual adapter lives in ``embed``."""
        weights = self.class_weights().detach().clone()
        return Readout(weights, torch.zeros(weights.shape[0]), float(self.logit_scale))

    def fold_text_adapter(self) -> None:
        """Replace W by the adapted class embeddings; afterwards the head is visual-only at inference."""
        if self.text_adapter is not None:
            with torch.no_grad():
                self.text_weights.copy_(self.class_weights())
            self.text_adapter = None

    def hparams(self) -> dict:
        return {**super().hparams(), "alpha": self.alpha, "reduction": self.reduction, "branch": self.branch}

    def refit_options(self, recorded: dict, **common) -> ClipAdapterOptions:
        """The recorded recipe with this head's α and branch (α is not searched again)."""
        return replace(super().refit_options(recorded, **common), alpha=self.alpha, branch=self.branch)

    @classmethod
    def fit(cls, problem: FewShotProblem, options: ClipAdapterOptions) -> ClipAdapterHead:
        if options.alpha == "auto":
            return _fit_alpha_on_val(cls, problem, options)
        alpha = DEFAULT_ALPHA if options.alpha is None else float(options.alpha)
        return _fit_one(cls, problem, options, alpha)


def _fit_one(cls, problem: FewShotProblem, options: ClipAdapterOptions, alpha: float) -> ClipAdapterHead:
    torch.manual_seed(options.seed)
    head = cls(problem.text_weights, problem.logit_scale, alpha=alpha, branch=options.branch)
    if options.branch in ("text", "both"):
        head.text_adapter = Adapter(problem.text_weights.shape[1], head.reduction)
    head.text_weights.requires_grad_(False)
    recipe = options.training_recipe(problem.train_features.shape[1])
    train_head(head, problem, options, recipe, description=f"clip-adapter ({options.recipe}) α={alpha:g}")
    head.fold_text_adapter()
    return head


def _fit_alpha_on_val(cls, problem: FewShotProblem, options: ClipAdapterOptions) -> ClipAdapterHead:
    if not problem.has_val:
        raise ClipedgeError("--alpha auto: needs a val split to choose α; pass a number or a split with val images")
    best_head, best_score = None, -1.0
    for alpha in ALPHA_GRID:
        head = _fit_one(cls, problem, options, alpha)
        score = val_accuracy(head, problem)
        log.debug("clip-adapter: α=%g val accuracy %.4f", alpha, score)
        if score > best_score:
            best_head, best_score = head, score
    log.debug("clip-adapter: α=%g chosen on val", best_head.alpha)
    return best_head
