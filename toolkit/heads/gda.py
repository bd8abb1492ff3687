"""GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based Adaptation").

Gaussian discriminant analysis on L2-normalised augmented support features,
in closed form (mrflogs/ICLR24): class means μ_c, one shared covariance with
the paper's shrinkage, and a linear classifier

    Σ⁻¹ = D · pinv(S + tr(S)/(N − 1) · I),   S = Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ
    W_c = Σ⁻¹ μ_c,   b_c = log π_c − ½ μ_cᵀ Σ⁻¹ μ_c   (π uniform, as the official code)

(the official ``D · pinv((N − 1)·Σ̂ + tr(Σ̂)·I)`` with Σ̂ = S/(N − 1), written with the
within-class scatter S that a device can accumulate). It is blended with zero-shot
CLIP: logits = scale · norm(f)·Tᵀ + α · (norm(f)·Wᵀ + b), α chosen on val over the
official grid 1e-4 … 1e2 (the first best wins). The zero-shot term uses the model's
logit scale where the official code writes 100 (the same for OpenAI and LAION
weights; docs/methods.md).

S is zero, and the shrinkage with it, only when every class has a single feature
(one image and no augmented views): that case is refused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipedge.core.errors import ClipedgeError

from .base import FewShotProblem, Head, Readout, accuracy
from .options import ViewOptions
from .recipe import TIP_ADAPTER_SCALE, Augmentation
from .registry import register_head

log = logging.getLogger(__name__)

ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: the official code's α when nothing is searched (its search starts from it)
DEFAULT_ALPHA = 0.1
#: the official cache augmentation (``augment_epoch`` views, RandomResizedCrop 0.5–1 + flip), as Tip-Adapter's
AUGMENTATION = Augmentation(10, TIP_ADAPTER_SCALE)


@dataclass(kw_only=True)
class GdaOptions(ViewOptions):
    def augmentation(self) -> Augmentation:
        return Augmentation(self.views or AUGMENTATION.views, AUGMENTATION.scale)


def within_class_scatter(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(class means [C, D], scatter S [D, D]) of rows ``x``, in float64."""
    x = x.double()
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        missing = int((counts == 0).nonzero()[0])
        raise ClipedgeError(f"--method gda: class {missing} has no training images; every class needs at least one")
    means = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x) / counts[:, None]
    centred = x - means[labels]
    return means, centred.t() @ centred


def gda_classifier(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GDA's W [C, D] and b [C] (float32) from L2-normalised features ``x`` [N, D]."""
    means, scatter = within_class_scatter(x, labels, num_classes)
    count, dim = x.shape
    trace = float(scatter.trace())
    if trace <= 0:
        raise ClipedgeError("--method gda: every class has a single training feature, so the covariance cannot be "
                            "estimated; needs at least 2 per class (images × --views): use --views 2 or more, or --shots 2")
    precision = dim * torch.linalg.pinv(scatter + trace / (count - 1) * torch.eye(dim, dtype=torch.float64))
    weights = means @ precision  # precision is symmetric: row c is Σ⁻¹ μ_c
    bias = math.log(1.0 / num_classes) - 0.5 * (weights * means).sum(dim=1)
    return weights.float(), bias.float()


@register_head
class GdaHead(Head):
    """logits = scale · norm(f)·Tᵀ + α · (norm(f)·Wᵀ + b), W and b from GDA's closed form."""

    kind = "gda"
    Options = GdaOptions
    chosen_on_val = "α"
    selection = "α on val over 1e-4, 1e-3, …, 1e2 (the official grid); W and b in closed form"

    def __init__(self, text_weights: torch.Tensor, logit_scale: float, alpha: float = DEFAULT_ALPHA):
        super().__init__(text_weights, logit_scale)
        self.alpha = float(alpha)
        self.register_buffer("gda_weights", torch.zeros_like(self.text_weights))
        self.register_buffer("gda_bias", torch.zeros(self.text_weights.shape[0]))

    def gda_logits(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized @ self.gda_weights.t() + self.gda_bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(features, dim=-1)
        return self.zero_shot_logits(normalized) + self.alpha * self.gda_logits(normalized)

    @torch.no_grad()
    def readout(self) -> Readout:
        weights = self.logit_scale * self.text_weights + self.alpha * self.gda_weights
        return Readout(weights.detach().clone(), (self.alpha * self.gda_bias).detach().clone(), 1.0)

    def hparams(self) -> dict:
        return {**super().hparams(), "alpha": self.alpha}

    @classmethod
    def fit(cls, problem: FewShotProblem, options: GdaOptions) -> GdaHead:
        x = F.normalize(problem.train_features.flatten(0, 1).float(), dim=-1)
        y = problem.train_labels.repeat(problem.train_features.shape[0])
        head = cls(problem.text_weights, problem.logit_scale)
        weights, bias = gda_classifier(x, y, problem.num_classes)
        with torch.no_grad():
            head.gda_weights.copy_(weights)
            head.gda_bias.copy_(bias)
        if not problem.has_val:
            log.warning("gda: no val split, keeping α=%g", DEFAULT_ALPHA)
            return head.eval()
        head.alpha = choose_alpha(head, problem)
        return head.eval()


@torch.no_grad()
def choose_alpha(head: GdaHead, problem: FewShotProblem) -> float:
    """The first α of the grid with the best val accuracy (the official loop keeps the first strict best)."""
    normalized = F.normalize(problem.val_features.float(), dim=-1)
    zero_shot, gda = head.zero_shot_logits(normalized), head.gda_logits(normalized)
    scores = [accuracy(zero_shot + alpha * gda, problem.val_labels) for alpha in ALPHA_GRID]
    best = max(range(len(ALPHA_GRID)), key=lambda i: (scores[i], -i))
    log.debug("gda: α=%g chosen on val (accuracy %.4f)", ALPHA_GRID[best], scores[best])
    return ALPHA_GRID[best]
