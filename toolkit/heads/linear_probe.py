"""Linear probe: multinomial logistic regression on L2-normalised features (CLIP paper's baseline).

The L2 penalty is chosen on val by a coarse sweep refined around the best
value, as the CLIP paper does; each fit warm-starts from the previous one,
so the sweep costs little more than one fit. Two recipes (``--recipe``):

- ``official``: the CLIP paper's protocol, features of the eval transform
  (resize + centre crop), no augmentation;
- ``fast`` (the default: 3.4 points better on val on the embedded task,
  BENCHMARKS.md "Recipes"): the training images' 10 augmented views
  (scale 0.5–1 + flip), the views Tip-Adapter's cache uses, so one feature
  cache serves both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clipedge.core.errors import ClipedgeError

from .base import FewShotProblem, Head, Readout, accuracy
from .options import ViewOptions, check_choice
from .recipe import TIP_ADAPTER_SCALE, Augmentation
from .registry import register_head

log = logging.getLogger(__name__)

COARSE_PENALTIES = tuple(10.0**e for e in range(-6, 3))
DEFAULT_PENALTY = 1e-3
LBFGS_ITERATIONS = 200
RECIPES = ("official", "fast")
DEFAULT_RECIPE = "fast"  # chosen on val: BENCHMARKS.md "Recipes"
FAST_AUGMENTATION = Augmentation(10, TIP_ADAPTER_SCALE)


@dataclass(kw_only=True)
class LinearProbeOptions(ViewOptions):
    recipe: str = DEFAULT_RECIPE

    def validate(self) -> None:
        super().validate()
        check_choice("recipe", self.recipe, RECIPES)
        if self.recipe == "official" and self.views:
            raise ClipedgeError(f"--views {self.views}: the official linear-probe recipe trains on un-augmented "
                                "features; pass --recipe fast to use augmented views")

    def augmentation(self) -> Augmentation:
        if self.recipe == "official":
            return Augmentation(views=0)
        return Augmentation(self.views or FAST_AUGMENTATION.views, FAST_AUGMENTATION.scale)


@register_head
class LinearProbeHead(Head):
    """logits = norm(f) · Aᵀ + b, with A and b learned; W is kept only to describe the run."""

    kind = "linear-probe"
    chosen_on_val = "L2 penalty"
    selection = "L2 penalty on val: 1e-6 … 1e2 by decades, then ×0.3 and ×3 around the best"
    Options = LinearProbeOptions

    def __init__(self, text_weights: torch.Tensor, logit_scale: float, penalty: float = DEFAULT_PENALTY):
        super().__init__(text_weights, logit_scale)
        self.penalty = penalty
        self.linear = nn.Linear(text_weights.shape[1], text_weights.shape[0])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(features, dim=-1))

    @torch.no_grad()
    def readout(self) -> Readout:
        return Readout(self.linear.weight.detach().clone(), self.linear.bias.detach().clone(), 1.0)

    def hparams(self) -> dict:
        return {**super().hparams(), "penalty": self.penalty}

    def fold_logit_scale(self) -> None:
        """Nothing to fold: a probe's logits never use CLIP's logit scale."""

    @classmethod
    def fit(cls, problem: FewShotProblem, options: LinearProbeOptions) -> LinearProbeHead:
        x = F.normalize(problem.train_features.flatten(0, 1), dim=-1)
        y = problem.train_labels.repeat(problem.train_features.shape[0])
        head = cls(problem.text_weights, problem.logit_scale)
        nn.init.zeros_(head.linear.weight)
        nn.init.zeros_(head.linear.bias)
        if not problem.has_val:
            log.warning("linear probe: no val split, using penalty %g", DEFAULT_PENALTY)
            return _fit_penalty(head, x, y, DEFAULT_PENALTY).eval()
        val_x = F.normalize(problem.val_features, dim=-1)
        scores: dict[float, tuple[float, dict]] = {}

        def evaluate(penalty: float) -> None:
            _fit_penalty(head, x, y, penalty)
            with torch.no_grad():
                scores[penalty] = (accuracy(head.linear(val_x), problem.val_labels), _snapshot(head))

        # Strong to weak regularisation, so each warm start is close to the next optimum.
        for penalty in tqdm(sorted(COARSE_PENALTIES, reverse=True), desc="linear probe sweep", disable=not options.progress, leave=False):
            evaluate(penalty)
        best = max(scores, key=lambda p: (scores[p][0], p))
        for factor in (0.3, 3.0):
            head.load_state_dict(scores[best][1])
            evaluate(best * factor)
        best = max(scores, key=lambda p: (scores[p][0], p))
        head.load_state_dict(scores[best][1])
        head.penalty = best
        log.debug("linear probe: penalty %g chosen on val (accuracy %.3f)", best, scores[best][0])
        return head.eval()


def _snapshot(head: Head) -> dict:
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _fit_penalty(head: LinearProbeHead, x: torch.Tensor, y: torch.Tensor, penalty: float) -> LinearProbeHead:
    head.penalty = penalty
    optimizer = torch.optim.LBFGS(head.linear.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head.linear(x), y) + penalty * head.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head
