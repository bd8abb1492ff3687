"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of few-shot features.

Keys are the training images' features averaged over their augmented views and
L2-normalised; values are one-hot labels. The cache adds
``α · exp(−β·(1 − f·Kᵀ)) · L`` to the zero-shot logits. Tip-Adapter-F makes the
keys trainable. α and β are searched on val over the papers' grid (ImageNet
configuration), never on test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .base import CacheReadout, FewShotProblem, Head, OptimisedOptions, Readout, ViewOptions, train_head
from .recipe import TIP_ADAPTER_SCALE, Augmentation, Recipe
from .registry import register_head

log = logging.getLogger(__name__)

INIT_ALPHA, INIT_BETA = 1.17, 1.0
SEARCH_SCALE = (7.0, 3.0)  # (β max, α max): the official ImageNet configuration
#: the official configuration for specialised data where zero-shot is weak (DTD; EuroSAT's is [12, 10]): searched
#: too where the best point of the ImageNet grid lies on its upper edge (search_alpha_beta)
WIDE_SEARCH_SCALE = (13.0, 13.0)
SEARCH_STEPS = (200, 20)  # (β values, α values)
#: the official Tip-Adapter-F recipe (ImageNet configuration): AdamW with eps 1e-4, cosine per batch
FINETUNE_RECIPE = Recipe("adamw", lr=1e-3, epochs=20, batch_size=256, weight_decay=0.01, eps=1e-4)
#: the official cache: ``augment_epoch`` 10 views per image at RandomResizedCrop scale 0.5–1 + flip
CACHE_AUGMENTATION = Augmentation(10, TIP_ADAPTER_SCALE)


def _cache_views(views: int | None) -> Augmentation:
    return Augmentation(views or CACHE_AUGMENTATION.views, CACHE_AUGMENTATION.scale)


@dataclass(kw_only=True)
class TipAdapterOptions(ViewOptions):
    def augmentation(self) -> Augmentation:
        return _cache_views(self.views)


@dataclass(kw_only=True)
class TipAdapterFOptions(OptimisedOptions):
    def augmentation(self) -> Augmentation:
        return _cache_views(self.views)


def search_grid(scale: float, steps: int) -> torch.Tensor:
    """The papers' grid: ``steps`` values from 0.1 upwards by (scale − 0.1)/steps."""
    return 0.1 + torch.arange(steps, dtype=torch.float64) * (scale - 0.1) / steps


@register_head
class TipAdapterHead(Head):
    """logits = scale · f·Wᵀ + α · exp(−β·(1 − f·Kᵀ)) · L, with f = norm(features)."""

    kind = "tip-adapter"
    selection = "α, β on val over the official grid (ImageNet's, widened to DTD's at its edge)"
    Options = TipAdapterOptions

    def __init__(
        self,
        text_weights: torch.Tensor,
        logit_scale: float,
        num_keys: int,
        alpha: float = INIT_ALPHA,
        beta: float = INIT_BETA,
        shots_per_class: int | None = None,
    ):
        super().__init__(text_weights, logit_scale)
        self.alpha, self.beta = float(alpha), float(beta)
        self.shots_per_class = shots_per_class
        self.keys = nn.Parameter(torch.zeros(num_keys, text_weights.shape[1]), requires_grad=self.trains)
        self.register_buffer("values", torch.zeros(num_keys, text_weights.shape[0]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(features, dim=-1)
        affinity = normalized @ self.keys.t()
        weights = torch.exp(-self.beta * (1 - affinity))
        if self.shots_per_class:
            # Keys grouped by class with equal counts: `weights @ values` is exactly a per-class sum,
            # without the N×K×C matmul (half of Tip-Adapter-F's training FLOPs at ImageNet scale).
            cache_logits = weights.unflatten(-1, (-1, self.shots_per_class)).sum(dim=-1)
        else:
            cache_logits = weights @ self.values
        return self.zero_shot_logits(normalized) + self.alpha * cache_logits

    @torch.no_grad()
    def readout(self) -> Readout:
        """The zero-shot readout plus the cache: the keys as they are (Tip-Adapter-F's trained keys are not
        re-normalised, as ``forward`` does not) and each key's class."""
        readout = super().readout()
        readout.cache = CacheReadout(self.keys.detach().clone(), self.values.argmax(dim=1), self.alpha, self.beta)
        return readout

    def hparams(self) -> dict:
        return {**super().hparams(), "num_keys": self.keys.shape[0], "alpha": self.alpha, "beta": self.beta,
                "shots_per_class": self.shots_per_class}

    @classmethod
    def from_cache(cls, problem: FewShotProblem) -> TipAdapterHead:
        # Keys grouped by class turn `exp(...) @ values` into a reshape-and-sum (key order is irrelevant to the formula).
        order = torch.argsort(problem.train_labels, stable=True)
        keys = F.normalize(problem.train_features.mean(dim=0)[order], dim=-1)
        counts = torch.bincount(problem.train_labels, minlength=problem.num_classes)
        equal = bool((counts == counts[0]).all()) and int(counts[0]) > 0
        head = cls(problem.text_weights, problem.logit_scale, num_keys=len(keys), shots_per_class=int(counts[0]) if equal else None)
        with torch.no_grad():
            head.keys.copy_(keys)
            head.values.copy_(F.one_hot(problem.train_labels[order], problem.num_classes).float())
        return head

    @classmethod
    def fit(cls, problem: FewShotProblem, options: TipAdapterOptions | TipAdapterFOptions) -> TipAdapterHead:
        head = cls.from_cache(problem)
        if cls.trains:
            recipe = FINETUNE_RECIPE.overridden(options.epochs, options.lr, options.batch_size)
            train_head(head, problem, options, recipe, keep_best_on_val=True, description=cls.kind)
        if problem.has_val:
            head.alpha, head.beta = search_alpha_beta(head, problem, progress=options.progress)
        else:
            log.warning("%s: no val split, keeping α=%g β=%g", cls.kind, head.alpha, head.beta)
        return head.eval()


@register_head
class TipAdapterFHead(TipAdapterHead):
    """Tip-Adapter with trainable keys, initialised from the cache."""

    kind = "tip-adapter-f"
    trains = True
    selection = "keys: the best val epoch of a fixed recipe; then α, β on val as Tip-Adapter"
    Options = TipAdapterFOptions


ROWS_PER_CHUNK = 128  # val rows per pass: keeps the [rows, keys] block in cache at ImageNet scale


@torch.no_grad()
def search_alpha_beta(head: TipAdapterHead, problem: FewShotProblem, progress: bool = True) -> tuple[float, float]:
    """α and β chosen on val over the official ImageNet grid, widened where the data asks for it.

    The official configurations search wider where zero-shot is weak (DTD's grid is 13 × 13, ImageNet's
    7 × 3). When the best ImageNet-grid point has the largest α or β, the wide α values (free: every α of
    a β is scored at once) and, for the largest β, the wide β values are searched too, and the best of all wins.
    """
    narrow_alphas = search_grid(SEARCH_SCALE[1], SEARCH_STEPS[1])
    alphas = torch.cat([narrow_alphas, search_grid(WIDE_SEARCH_SCALE[1], SEARCH_STEPS[1])]).float()
    betas = search_grid(SEARCH_SCALE[0], SEARCH_STEPS[0])
    correct = _score_grid(head, problem, betas, alphas, progress)
    beta_index, alpha_index = _best(correct[:, : len(narrow_alphas)])
    at_beta_edge = beta_index == len(betas) - 1
    if at_beta_edge or alpha_index == len(narrow_alphas) - 1:
        wide_betas = search_grid(WIDE_SEARCH_SCALE[0], SEARCH_STEPS[0])
        if at_beta_edge:
            correct = torch.cat([correct, _score_grid(head, problem, wide_betas, alphas, progress)])
            betas = torch.cat([betas, wide_betas])
        beta_index, alpha_index = _best(correct)
    alpha, beta = float(alphas[alpha_index]), float(betas[beta_index])
    accuracy = int(correct[beta_index, alpha_index]) / len(problem.val_labels)
    log.info("%s: α=%.3f β=%.3f chosen on val (accuracy %.4f)", head.kind, alpha, beta, accuracy)
    return alpha, beta


def _best(correct: torch.Tensor) -> tuple[int, int]:
    """(β index, α index) of the first grid point with the most val images right."""
    return divmod(int(correct.argmax()), correct.shape[1])


def _score_grid(head: TipAdapterHead, problem: FewShotProblem, betas: torch.Tensor, alphas: torch.Tensor,
                progress: bool) -> torch.Tensor:
    """How many val images each (β, α) gets right, exactly, in a few seconds at ImageNet scale.

    Two identities keep the grid cheap. The β grid is arithmetic, so
    ``exp(β·(a − 1))`` advances by one multiplication per step instead of an
    exp. And for a fixed β, the α values at which the true class wins form an
    interval per image (every rival class gives one linear inequality in α),
    so all α values are scored by two comparisons.
    """
    normalized = F.normalize(problem.val_features.float(), dim=-1)
    labels = problem.val_labels
    zero_shot = head.zero_shot_logits(normalized)
    keys = head.keys.detach()
    sum_per_class = _class_summer(head.values.argmax(dim=1), problem.num_classes)
    beta_step = float(betas[1] - betas[0])
    correct = torch.zeros(len(betas), len(alphas), dtype=torch.long)
    chunks = range(0, len(labels), ROWS_PER_CHUNK)
    for start in tqdm(chunks, desc=f"{head.kind} α/β search", disable=not progress, leave=False):
        rows = slice(start, start + ROWS_PER_CHUNK)
        y = labels[rows, None]
        affinity_minus_one = normalized[rows] @ keys.t() - 1
        cache = torch.exp(float(betas[0]) * affinity_minus_one)
        ratio = torch.exp(beta_step * affinity_minus_one)
        margin_zero_shot = zero_shot[rows] - zero_shot[rows].gather(1, y)  # rival minus true, per class
        for index in range(len(betas)):
            if index:
                cache.mul_(ratio)
            cache_logits = sum_per_class(cache)
            margin_cache = cache_logits - cache_logits.gather(1, y)
            correct[index] += _wins_per_alpha(margin_zero_shot, margin_cache, alphas)
    return correct


def _wins_per_alpha(margin_zero_shot: torch.Tensor, margin_cache: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """How many rows the true class wins at each α: it wins iff mz_c + α·mc_c ≤ 0 for every rival c."""
    bound = -margin_zero_shot / margin_cache
    upper = torch.where(margin_cache > 0, bound, torch.inf).amin(dim=1)
    lower = torch.where(margin_cache < 0, bound, -torch.inf).amax(dim=1)
    possible = ~((margin_cache == 0) & (margin_zero_shot > 0)).any(dim=1)
    wins = (alphas >= lower[:, None]) & (alphas <= upper[:, None]) & possible[:, None]
    return wins.sum(dim=0)


def _class_summer(key_labels: torch.Tensor, num_classes: int):
    """``E @ one_hot(key_labels)`` as a reshape-and-sum when keys come grouped with equal shots per class."""
    counts = torch.bincount(key_labels, minlength=num_classes)
    grouped = bool((key_labels[1:] >= key_labels[:-1]).all()) and bool((counts == counts[0]).all()) and counts[0] > 0
    if grouped:
        per_class = int(counts[0])
        return lambda scores: scores.view(scores.shape[0], num_classes, per_class).sum(dim=2)
    return lambda scores: torch.zeros(scores.shape[0], num_classes).index_add_(1, key_labels, scores)
