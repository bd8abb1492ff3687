"""Zero-shot CLIP: cosine similarity to the class text directions, scaled. Nothing to train."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FewShotProblem, Head
from .options import TrainOptions
from .registry import register_head


@register_head
class ZeroShotHead(Head):
    """logits = scale · norm(f) · Wᵀ"""

    kind = "zero-shot"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_logits(F.normalize(features, dim=-1))

    @classmethod
    def fit(cls, problem: FewShotProblem, options: TrainOptions) -> ZeroShotHead:
        return cls(problem.text_weights, problem.logit_scale).eval()
