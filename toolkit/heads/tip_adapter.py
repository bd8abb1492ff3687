"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of few-shot features.

Keys are the training images' features averaged over their augmented views and
L2-normalised; values are one-hot labels. The cache adds
``α · exp(−β·(1 − f·Kᵀ)) · L`` to the zero-shot logits. Tip-Adapter-F makes the
keys trainable. α and β are searched on val over the official grids, never on
test: ImageNet's (β: 200 values 0.1 … 7, α: 20 values 0.1 … 3), and where its
best point lies on its largest α or β, DTD's (β and α up to 13) as well.

The zero-shot term uses the model's own logit scale where the official code
writes 100: identical for OpenAI and LAION weights (whose scale is 100), and for
another model (clipedge-tiny: 30.4) the zero-shot probabilities stay those the
model was trained to give; the measured effect is in docs/methods.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .base import CacheReadout, FewShotProblem, Head, Readout
from .options import OptimisedOptions, ViewOptions
from .recipe import TIP_ADAPTER_SCALE, Augmentation, Recipe
from .registry import register_head
from .training_loop import train_head

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
    chosen_on_val = "α, β"
    selection = "α, β on val over ImageNet's official grid, and DTD's full grid where ImageNet's best is on its edge"
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

    def cache_logits(self, normalized: torch.Tensor, beta: float) -> torch.Tensor:
        """exp(−β·(1 − f·Kᵀ)) · L; the α/β search calls this too, so it scores exactly what ``forward`` computes."""
        weights = torch.exp(-beta * (1 - normalized @ self.keys.t()))
        if self.shots_per_class:
            # Keys grouped by class with equal counts: `weights @ values` is exactly a per-class sum,
            # without the N×K×C matmul (half of Tip-Adapter-F's training FLOPs at ImageNet scale).
            return weights.unflatten(-1, (-1, self.shots_per_class)).sum(dim=-1)
        return weights @ self.values

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(features, dim=-1)
        return self.zero_shot_logits(normalized) + self.alpha * self.cache_logits(normalized, self.beta)

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
    chosen_on_val = "epoch; α, β"
    selection = "keys: the best val epoch of a fixed recipe; then α, β on val as Tip-Adapter"
    Options = TipAdapterFOptions


ROWS_PER_CHUNK = 128  # val rows per pass: keeps the [rows, keys] block in cache at ImageNet scale


@torch.no_grad()
def search_alpha_beta(head: TipAdapterHead, problem: FewShotProblem, progress: bool = True) -> tuple[float, float]:
    """α and β chosen on val: the official ImageNet grid, and DTD's full grid too where ImageNet's best lies on
    its edge.

    Within a grid the first (β, α) in the official loop's order (β outer, α inner) with the most val images
    right wins, as its strict ``>`` keeps it; DTD's grid replaces ImageNet's best only when strictly better.
    """
    grids = [(search_grid(SEARCH_SCALE[0], SEARCH_STEPS[0]), search_grid(SEARCH_SCALE[1], SEARCH_STEPS[1]))]
    best = _best_point(head, problem, *grids[0], progress)
    on_edge = best[1] == len(grids[0][0]) - 1 or best[2] == len(grids[0][1]) - 1
    if on_edge:
        grids.append((search_grid(WIDE_SEARCH_SCALE[0], SEARCH_STEPS[0]), search_grid(WIDE_SEARCH_SCALE[1], SEARCH_STEPS[1])))
        wide = _best_point(head, problem, *grids[1], progress)
        if wide[0] > best[0]:
            best = wide
            grids.reverse()
    correct, beta_index, alpha_index = best
    alpha, beta = float(grids[0][1][alpha_index]), float(grids[0][0][beta_index])
    log.debug("%s: α=%.3f β=%.3f chosen on val (accuracy %.4f)", head.kind, alpha, beta, correct / len(problem.val_labels))
    return alpha, beta


def _best_point(head: TipAdapterHead, problem: FewShotProblem, betas: torch.Tensor, alphas: torch.Tensor,
                progress: bool) -> tuple[int, int, int]:
    """(val images right, β index, α index) of the first grid point with the most right."""
    correct = score_grid(head, problem, betas, alphas, progress)
    flat = int(correct.flatten().argmax())  # argmax returns the first maximum: the official loop's strict ">"
    beta_index, alpha_index = divmod(flat, correct.shape[1])
    return int(correct[beta_index, alpha_index]), beta_index, alpha_index


def score_grid(head: TipAdapterHead, problem: FewShotProblem, betas: torch.Tensor, alphas: torch.Tensor,
               progress: bool = False) -> torch.Tensor:
    """How many val images each (β, α) gets right [β, α], exactly as evaluating the head at that point would.

    Each point's logits are the head's own float32 ``zero-shot + α · cache(β)`` and a point counts an image
    right when the argmax (the first maximum, as ``torch.argmax`` and the official ``topk`` take it) is its
    label: exact ties and rounding are those of direct evaluation. The cache term is computed once per β and
    all α values of that β are scored from it.
    """
    normalized = F.normalize(problem.val_features.float(), dim=-1)
    labels = problem.val_labels
    # The α a head holds is a Python float; multiplying a float32 tensor by it rounds it to float32 first.
    alpha_values = torch.tensor([float(a) for a in alphas], dtype=torch.float32)[None, :, None]
    correct = torch.zeros(len(betas), len(alphas), dtype=torch.long)
    chunks = range(0, len(labels), ROWS_PER_CHUNK)
    for start in tqdm(chunks, desc=f"{head.kind} α/β search", disable=not progress, leave=False):
        rows = slice(start, start + ROWS_PER_CHUNK)
        zero_shot, truth = head.zero_shot_logits(normalized[rows]), labels[rows]
        for index, beta in enumerate(float(b) for b in betas):
            logits = zero_shot[:, None, :] + alpha_values * head.cache_logits(normalized[rows], beta)[:, None, :]
            correct[index] += (logits.argmax(dim=2) == truth[:, None]).sum(dim=0)
    return correct
