"""The options a head accepts: the common ones every method takes, and the families of method-owned knobs.

Each head's ``Options`` subclass adds what it owns; the registry's factory refuses anything else, and every
refusal names the option as the command line spells it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from clipedge.core.errors import ClipedgeError

from .recipe import Augmentation

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
