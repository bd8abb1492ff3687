"""What every head shares: the problem it is fitted to, the head's interface, and its readout form.

Options live in ``options.py``, the gradient-descent loop in ``training_loop.py``.

A head maps raw image features ``[N, D]`` to logits ``[N, C]`` with plain
tensor ops, so export can trace it into the encoder's graph. Heads that train
see one randomly chosen augmented view per image per epoch, which is what the
papers' augmented-image epochs amount to once features are cached.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .options import TrainOptions


@dataclass
class CacheReadout:
    """A Tip-Adapter cache in readout form: ``alpha · exp(−beta·(1 − e·Kᵀ)) · one_hot(labels)``."""

    keys: torch.Tensor  # [K, D]
    labels: torch.Tensor  # [K] int64, the class index of each key
    alpha: float
    beta: float


@dataclass
class Readout:
    """Every head as data: ``logits = scale · e·Wᵀ + bias [+ cache]`` with ``e = head.embed(features)``.

    This is what a device needs to classify from embeddings alone (the class bank): the adapted,
    L2-normalised embedding carries all of the head that is not linear in it.
    """

    weights: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C], zeros where the head has none
    scale: float
    cache: CacheReadout | None = None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The readout formula, for checking a head against its own readout."""
        logits = self.scale * embeddings @ self.weights.t() + self.bias
        if self.cache is not None:
            affinity = embeddings @ self.cache.keys.t()
            one_hot = F.one_hot(self.cache.labels, self.weights.shape[0]).to(embeddings.dtype)
            logits = logits + self.cache.alpha * torch.exp(-self.cache.beta * (1 - affinity)) @ one_hot
        return logits


@dataclass
class FewShotProblem:
    """Cached features and the text classifier; everything a head needs to fit itself."""

    text_weights: torch.Tensor  # [C, D], rows L2-normalised
    logit_scale: float
    train_features: torch.Tensor  # [V, N, D] raw augmented views ([1, N, D]: eval-transform features)
    train_labels: torch.Tensor  # [N]
    val_features: torch.Tensor | None = None  # [M, D] raw, eval transform
    val_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.text_weights.shape[0]

    @property
    def has_val(self) -> bool:
        return self.val_features is not None and len(self.val_features) > 0


class Head(nn.Module, metaclass=ABCMeta):
    """Base class: holds the text classifier and the logit scale as buffers, so they export."""

    kind: ClassVar[str]
    trains: ClassVar[bool] = False
    #: what this method chooses on val and what it keeps fixed (recorded beside its hparams in the manifest)
    selection: ClassVar[str] = "nothing chosen: no hyperparameters"
    #: the same in a few words, for tables: what val chooses ("nothing": a fixed recipe)
    chosen_on_val: ClassVar[str] = "nothing"
    #: the options this method accepts; the factory (``head_options``) refuses any other
    Options: ClassVar[type[TrainOptions]] = TrainOptions

    def __init__(self, text_weights: torch.Tensor, logit_scale: float):
        super().__init__()
        self.register_buffer("text_weights", text_weights.detach().clone().float())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def zero_shot_logits(self, normalized: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * normalized @ self.text_weights.t()

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The L2-normalised feature the classifier compares against W (exported as ``embeddings``)."""
        return F.normalize(features, dim=-1)

    @torch.no_grad()
    def readout(self) -> Readout:
        """The head as ``scale · embed(f)·Wᵀ + bias [+ cache]``; this default is the text-classifier form
        (``scale · e·Tᵀ``), and a head whose logits differ overrides it (the readout test holds each to it)."""
        weights = self.text_weights.detach().clone()
        return Readout(weights, torch.zeros(weights.shape[0]), float(self.logit_scale))

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments beyond W and the scale, and the method's selection protocol (a record that
        ``restore`` leaves out); stored in the manifest."""
        return {"selection": self.selection}

    @torch.no_grad()
    def fold_logit_scale(self) -> None:
        """Store scale · W and set the scale to 1, in place: the same logits with one multiply fewer per image.

        Export calls it on its own copy of the head; heads whose logits do not use the scale override it.
        """
        self.text_weights.mul_(self.logit_scale)
        self.logit_scale.fill_(1.0)

    def refit_options(self, recorded: dict[str, Any], **common: Any) -> TrainOptions:
        """Options that fit this method again on other data (calibration's held-out classes) the way this
        head was fitted: the run's recorded options, with what this head chose for itself kept fixed."""
        given = {name: recorded[name] for name in self.Options.method_fields() if recorded.get(name) is not None}
        given.pop("views", None)  # the refit reads the run's cached features; views are already chosen
        options = self.Options(**given, **common)
        options.validate()
        return options

    @classmethod
    @abstractmethod
    def fit(cls, problem: FewShotProblem, options: TrainOptions) -> Head:
        """Fit the head's own tensors to ``problem``; hyperparameters are chosen on val, never test."""

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], hparams: dict[str, Any]) -> Head:
        """Rebuild a trained head from ``head.safetensors`` tensors and manifest hparams."""
        hparams = {name: value for name, value in hparams.items() if name != "selection"}  # a record, not an argument
        head = cls(tensors["text_weights"], float(tensors["logit_scale"]), **hparams)
        head.load_state_dict(tensors)
        return head.eval()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).float().mean().item()) if len(labels) else float("nan")


@torch.no_grad()
def val_accuracy(head: Head, problem: FewShotProblem, batch_size: int = 4096, dtype: torch.dtype | None = None) -> float:
    head.eval()
    device = problem.val_features.device
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = torch.cat([head(chunk).float() for chunk in problem.val_features.split(batch_size)])
    return accuracy(logits, problem.val_labels)
