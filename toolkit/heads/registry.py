"""The method registry: a head registers itself under its ``kind``; the factory builds its options.

As in timm's model registry, the factory hands each method only the options
it declares (its ``Options`` dataclass). An option given to a method that
does not declare it is refused rather than silently dropped, naming the
methods that do take it.
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from clipedge.core.errors import ClipedgeError

from .base import Head
from .options import COMMON_OPTIONS, TrainOptions, option_flag

HEADS: dict[str, type[Head]] = {}
H = TypeVar("H", bound=type[Head])


def register_head(cls: H) -> H:
    """Class decorator: make ``cls`` available as ``--method cls.kind``."""
    HEADS[cls.kind] = cls
    return cls


def head_class(kind: str) -> type[Head]:
    try:
        return HEADS[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, list(HEADS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ClipedgeError(f"--method {kind}: unknown method{hint}; expected one of {', '.join(HEADS)}") from None


def head_options(kind: str, **given: Any) -> TrainOptions:
    """``kind``'s options from ``given``, where ``None`` means "not given"; validated.

    Common options (seed, device, precision, progress) go to every method; any
    other given option must be one the method declares.
    """
    cls = head_class(kind)
    declared = set(cls.Options.method_fields()) | set(COMMON_OPTIONS)
    for name, value in given.items():
        if value is not None and name not in declared:
            takers = [k for k, other in HEADS.items() if name in other.Options.method_fields()]
            where = f"it applies to --method {' or '.join(takers)}" if takers else "no method takes it"
            raise ClipedgeError(f"{option_flag(name)}: --method {kind} does not take this option; {where}")
    options = cls.Options(**{name: value for name, value in given.items() if value is not None})
    options.validate()
    return options
