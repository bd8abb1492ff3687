"""What every head shares: the problem it is fitted to, its options, and the training loop.

A head maps raw image features ``[N, D]`` to logits ``[N, C]`` with plain
tensor ops, so export can trace it into the encoder's graph. Heads that train
see one randomly chosen augmented view per image per epoch, which is what the
papers' augmented-image epochs amount to once features are cached.
"""

from __future__ import annotations

import logging
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clipedge.core.errors import ClipedgeError

from .recipe import Augmentation, Recipe

log = logging.getLogger(__name__)


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


COMMON_OPTIONS = ("seed", "device", "precision", "progress")


def option_flag(name: str) -> str:
    """The command-line spelling of an option field: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def require_positive(name: str, value: float | None, what: str) -> None:
    if value is not None and value <= 0:
        raise ClipedgeError(f"{option_flag(name)} {value}: expected {what}")


@dataclass(kw_only=True)
class TrainOptions:
    """What every head accepts: how to run, not what to learn. Each head's ``Options`` subclass adds the
    knobs it owns; ``None`` there means the method's own default (its recipe)."""

    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # fp32, bf16, or auto (bf16 where the hardware has it)
    progress: bool = True

    @classmethod
    def method_fields(cls) -> tuple[str, ...]:
        """The options this method owns, beyond the common ones."""
        return tuple(f.name for f in fields(cls) if f.name not in COMMON_OPTIONS)

    def validate(self) -> None:
        """Refuse values this method cannot use, with the option's name; called by the factory."""

    def augmentation(self) -> Augmentation:
        """The training features this method needs; by default one eval-transform feature per image."""
        return Augmentation(views=0)

    def to_record(self) -> dict[str, Any]:
        """The method's own options for the manifest (``refit_options`` reads them back)."""
        return {name: getattr(self, name) for name in self.method_fields()}


@dataclass(kw_only=True)
class ViewOptions(TrainOptions):
    """Options of a method that learns from augmented views of its training images."""

    views: int | None = None

    def validate(self) -> None:
        super().validate()
        require_positive("views", self.views, "at least 1 augmented view")


@dataclass(kw_only=True)
class OptimisedOptions(ViewOptions):
    """Options of a method trained by gradient descent."""

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None

    def validate(self) -> None:
        super().validate()
        require_positive("epochs", self.epochs, "a positive integer")
        require_positive("batch_size", self.batch_size, "a positive integer")
        require_positive("lr", self.lr, "a positive learning rate")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ClipedgeError(f"{option_flag(name)} {value}: expected one of {', '.join(choices)}")


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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast roughly triples matmul throughput on CPUs with AVX512-BF16 or AMX."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    has_native_bf16 = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AMX") and bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    )
    return torch.bfloat16 if has_native_bf16 else None


def train_head(
    head: Head,
    problem: FewShotProblem,
    options: TrainOptions,
    recipe: Recipe,
    keep_best_on_val: bool = False,
    description: str = "train",
    penalty: Callable[[], torch.Tensor] | None = None,
) -> Head:
    """Cross-entropy training of ``head``'s trainable parameters on cached augmented views, per ``recipe``.

    Each epoch shows every image once, as one randomly chosen cached view. With
    ``keep_best_on_val`` the epoch with the best validation accuracy is kept
    (never the test set: that is the flaw in the official Tip-Adapter-F script
    that this avoids). ``penalty``, if given, is added to every batch's loss (CLAP's constraint).
    """
    device = torch.device(options.device)
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    head.to(device)
    if keep_best_on_val and problem.has_val:
        problem = _on_device(problem, device)
    views, labels = problem.train_features, problem.train_labels
    num_views, num_images = views.shape[0], views.shape[1]
    views, labels = views.to(device), labels.to(device)
    optimizer = recipe.optimizer_for([p for p in head.parameters() if p.requires_grad])
    batch_size = recipe.batch_size
    steps_per_epoch = math.ceil(num_images / batch_size)
    dtype = autocast_dtype(options.precision, device)
    best_state, best_accuracy = None, -1.0
    # miniters=1: an epoch can take minutes at ImageNet scale, and tqdm's adaptive interval, set by a fast first
    # epoch, would otherwise hold the bar at 0/N until the end
    bar = tqdm(range(recipe.epochs), desc=description, unit="epoch", disable=not options.progress, leave=False,
               miniters=1)
    for epoch in bar:
        head.train()
        order = torch.randperm(num_images, generator=generator).to(device)
        chosen_views = torch.randint(num_views, (num_images,), generator=generator).to(device)
        for step, start in enumerate(range(0, num_images, batch_size)):
            for group in optimizer.param_groups:
                group["lr"] = recipe.learning_rate(epoch, step, steps_per_epoch)
            index = order[start : start + batch_size]
            batch = views[chosen_views[index], index]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(head(batch).float(), labels[index])
                if penalty is not None:
                    loss = loss + penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if keep_best_on_val and problem.has_val:
            score = val_accuracy(head, problem, dtype=dtype)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{score:.3f}")
            if score > best_accuracy:
                best_accuracy = score
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.cpu().eval()


def _on_device(problem: FewShotProblem, device: torch.device) -> FewShotProblem:
    if problem.val_features.device == device:
        return problem
    return FewShotProblem(
        problem.text_weights, problem.logit_scale, problem.train_features, problem.train_labels,
        problem.val_features.to(device), problem.val_labels.to(device),
    )
