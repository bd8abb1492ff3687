"""LP++ (Huang et al., CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP").

logits_c = norm(f)·w_c + b_c + α_c · norm(f)·t_c: a linear probe plus a
per-class blend with the text classifier, trained full-batch with step sizes
set from the data instead of a learning-rate search (FereshteShakeri/FewShot-CLIP-Strong-Baseline):

- w_c starts at the sum of class c's normalised support features (the official
  ``compute_centroids``, which does not divide by the count), b at zero;
- α starts at 250 · the mean over classes of mean_{i∈c} f_i·t_c, the same for every class;
- W, b: SGD with momentum 0.9 at step 4N / λ_max(FᵀF);
- α: a gradient step of N / (4 · max_c Σ_i (f_i·t_c)²) every 10 epochs;
- 300 epochs, the epoch with the best val accuracy kept (ties: the later, as the official ``>=``).

Deviations, both in docs/methods.md: the official bias starts at nn.Linear's random
init (here zero, so a run does not depend on an unseeded draw), and its α gradient
is never reset, so each α step uses the sum of every epoch's gradient so far; here
α steps with the current epoch's gradient, the block-coordinate step the paper describes.
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
from .options import ViewOptions, require_positive
from .recipe import TIP_ADAPTER_SCALE, Augmentation
from .registry import register_head

log = logging.getLogger(__name__)

EPOCHS = 300
ALPHA_EVERY = 10
MOMENTUM = 0.9
ALPHA_INIT_FACTOR = 250.0
AUGMENTATION = Augmentation(10, TIP_ADAPTER_SCALE)


@dataclass(kw_only=True)
class LpPlusPlusOptions(ViewOptions):
    epochs: int | None = None

    def validate(self) -> None:
        super().validate()
        require_positive("epochs", self.epochs, "a positive integer")

    def augmentation(self) -> Augmentation:
        return Augmentation(self.views or AUGMENTATION.views, AUGMENTATION.scale)


@register_head
class LpPlusPlusHead(Head):
    """logits = norm(f)·(W + diag(α)·T)ᵀ + b"""

    kind = "lp++"
    trains = True
    Options = LpPlusPlusOptions
    chosen_on_val = "epoch"
    selection = "the epoch with the best val accuracy (300 epochs); step sizes from the data, no search"

    def __init__(self, text_weights: torch.Tensor, logit_scale: float):
        super().__init__(text_weights, logit_scale)
        self.linear = nn.Linear(text_weights.shape[1], text_weights.shape[0])
        self.text_blend = nn.Parameter(torch.zeros(text_weights.shape[0]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(features, dim=-1)
        return self.linear(normalized) + self.text_blend * (normalized @ self.text_weights.t())

    @torch.no_grad()
    def readout(self) -> Readout:
        weights = self.linear.weight + self.text_blend[:, None] * self.text_weights
        return Readout(weights.detach().clone(), self.linear.bias.detach().clone(), 1.0)

    def fold_logit_scale(self) -> None:
        """Nothing to fold: LP++'s logits never use CLIP's logit scale."""

    @classmethod
    def fit(cls, problem: FewShotProblem, options: LpPlusPlusOptions) -> LpPlusPlusHead:
        x = F.normalize(problem.train_features.flatten(0, 1).float(), dim=-1)
        y = problem.train_labels.repeat(problem.train_features.shape[0])
        text = problem.text_weights.float()
        head = cls(text, problem.logit_scale)
        if bool((torch.bincount(y, minlength=problem.num_classes) == 0).any()):
            raise ClipedgeError("--method lp++: every class needs at least one training image")
        start = starting_point(x, y, text)
        with torch.no_grad():
            head.linear.weight.copy_(start.weights)
            head.linear.bias.zero_()
            head.text_blend.fill_(start.alpha)
        step_w, step_alpha = start.step_w, start.step_alpha
        optimizer = torch.optim.SGD(head.linear.parameters(), lr=step_w, momentum=MOMENTUM)
        best_state, best_score = None, -1.0
        val_x = F.normalize(problem.val_features.float(), dim=-1) if problem.has_val else None
        epochs = options.epochs or EPOCHS
        for epoch in tqdm(range(epochs), desc=cls.kind, unit="epoch", disable=not options.progress, leave=False):
            head.text_blend.grad = None
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(x), y)
            loss.backward()
            optimizer.step()
            if (epoch + 1) % ALPHA_EVERY == 0:
                with torch.no_grad():
                    head.text_blend.sub_(step_alpha * head.text_blend.grad)
            if val_x is not None:
                with torch.no_grad():
                    score = accuracy(head(val_x), problem.val_labels)
                if score >= best_score:
                    best_score = score
                    best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if best_state is not None:
            head.load_state_dict(best_state)
            log.debug("lp++: best val epoch kept (accuracy %.4f)", best_score)
        else:
            log.warning("lp++: no val split, keeping the last of %d epochs", epochs)
        return head.eval()


@dataclass
class StartingPoint:
    weights: torch.Tensor  # [C, D]: per class, the sum of its normalised features
    alpha: float
    step_w: float
    step_alpha: float


def starting_point(x: torch.Tensor, labels: torch.Tensor, text: torch.Tensor) -> StartingPoint:
    """LP++'s initial W and α and its two step sizes, from normalised features ``x`` [N, D] and T [C, D]."""
    text_logits = x @ text.t()  # [N, C]
    weights = torch.zeros(text.shape[0], x.shape[1]).index_add_(0, labels, x)
    alpha = ALPHA_INIT_FACTOR * float(_class_mean_of_own_logit(text_logits, labels).mean())
    step_w = 4 * len(x) / float(torch.linalg.eigvalsh((x.t() @ x).double()).max())
    step_alpha = len(x) / (4 * float(text_logits.pow(2).sum(dim=0).max()))
    return StartingPoint(weights, alpha, step_w, step_alpha)


def _class_mean_of_own_logit(text_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per class c: the mean of f_i·t_c over class c's features."""
    num_classes = text_logits.shape[1]
    own = text_logits.gather(1, labels[:, None]).squeeze(1)
    totals = torch.zeros(num_classes).index_add_(0, labels, own)
    return totals / torch.bincount(labels, minlength=num_classes)
