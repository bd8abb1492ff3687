"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of few-shot features.

Keys are the training images' features averaged over their augmented views and
L2-normalised; values are one-hot labels. The cache adds
``α · exp(−β·(1 − f·Kᵀ)) · L`` to the zero-shot logits. Tip-Adapter-F makes the
keys trainable. α and β are searched on val over the papers' grid (ImageNet
configuration), never on test.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .base import FewShotProblem, Head, TrainOptions, train_head

log = logging.getLogger(__name__)

INIT_ALPHA, INIT_BETA = 1.17, 1.0
SEARCH_SCALE = (7.0, 3.0)  # (β max, α max)
SEARCH_STEPS = (200, 20)  # (β values, α values)
FINETUNE_DEFAULTS = {"epochs": 20, "lr": 1e-3, "batch_size": 256}


def search_grid(scale: float, steps: int) -> torch.Tensor:
    """The papers' grid: ``steps`` values from 0.1 upwards by (scale − 0.1)/steps."""
    return 0.1 + torch.arange(steps, dtype=torch.float64) * (scale - 0.1) / steps


class TipAdapterHead(Head):
    """logits = scale · f·Wᵀ + α · exp(−β·(1 − f·Kᵀ)) · L, with f = norm(features)."""

    kind = "tip-adapter"

    def __init__(
        self,
        text_weights: torch.Tensor,
        logit_scale: float,
        num_keys: int,
        alpha: float = INIT_ALPHA,
        beta: float = INIT_BETA,
    ):
        super().__init__(text_weights, logit_scale)
        self.alpha, self.beta = float(alpha), float(beta)
        self.keys = nn.Parameter(torch.zeros(num_keys, text_weights.shape[1]), requires_grad=self.trains)
        self.register_buffer("values", torch.zeros(num_keys, text_weights.shape[0]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(features, dim=-1)
        affinity = normalized @ self.keys.t()
        cache_logits = torch.exp(-self.beta * (1 - affinity)) @ self.values
        return self.zero_shot_logits(normalized) + self.alpha * cache_logits

    def hparams(self) -> dict:
        return {"num_keys": self.keys.shape[0], "alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_cache(cls, problem: FewShotProblem) -> "TipAdapterHead":
        keys = F.normalize(problem.train_features.mean(dim=0), dim=-1)
        head = cls(problem.text_weights, problem.logit_scale, num_keys=len(keys))
        with torch.no_grad():
            head.keys.copy_(keys)
            head.values.copy_(F.one_hot(problem.train_labels, problem.num_classes).float())
        return head

    @classmethod
    def fit(cls, problem: FewShotProblem, options: TrainOptions) -> "TipAdapterHead":
        head = cls.from_cache(problem)
        if cls.trains:
            train_head(
                head,
                problem,
                options,
                epochs=options.epochs or FINETUNE_DEFAULTS["epochs"],
                lr=options.lr or FINETUNE_DEFAULTS["lr"],
                batch_size=options.batch_size or FINETUNE_DEFAULTS["batch_size"],
                optimizer_kwargs={"eps": 1e-4},
                keep_best_on_val=True,
                description=cls.kind,
            )
        if problem.has_val:
            head.alpha, head.beta = search_alpha_beta(head, problem, progress=options.progress)
        else:
            log.warning("%s: no val split, keeping α=%g β=%g", cls.kind, head.alpha, head.beta)
        return head.eval()


class TipAdapterFHead(TipAdapterHead):
    """Tip-Adapter with trainable keys, initialised from the cache."""

    kind = "tip-adapter-f"
    trains = True


@torch.no_grad()
def search_alpha_beta(head: TipAdapterHead, problem: FewShotProblem, progress: bool = True) -> tuple[float, float]:
    """Exhaustive α/β search on val, with the affinities computed once.

    Values are one-hot, so ``exp(...) · L`` is a per-class sum (``index_add``)
    rather than an M×K×C matmul: that keeps the 4,000-point grid in seconds at
    ImageNet scale.
    """
    normalized = F.normalize(problem.val_features.float(), dim=-1)
    labels = problem.val_labels
    zero_shot = head.zero_shot_logits(normalized)
    affinity_minus_one = normalized @ head.keys.detach().t() - 1
    key_labels = head.values.argmax(dim=1)
    alphas = search_grid(SEARCH_SCALE[1], SEARCH_STEPS[1]).tolist()
    best = (-1.0, head.alpha, head.beta)
    scratch = torch.empty_like(affinity_minus_one)
    cache_logits = torch.empty_like(zero_shot)
    for beta in tqdm(search_grid(SEARCH_SCALE[0], SEARCH_STEPS[0]).tolist(), desc=f"{head.kind} α/β search", disable=not progress, leave=False):
        torch.mul(affinity_minus_one, beta, out=scratch).exp_()
        cache_logits.zero_().index_add_(1, key_labels, scratch)
        for alpha in alphas:
            correct = (torch.add(zero_shot, cache_logits, alpha=alpha).argmax(dim=1) == labels).sum().item()
            if correct > best[0]:
                best = (correct, alpha, beta)
    log.info("%s: α=%.3f β=%.3f chosen on val (accuracy %.4f)", head.kind, best[1], best[2], best[0] / len(labels))
    return best[1], best[2]
