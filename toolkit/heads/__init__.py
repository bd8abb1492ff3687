"""The method registry: one head class per method, looked up by name."""

from __future__ import annotations

import difflib

from ..errors import ClipedgeError
from .base import FewShotProblem, Head, TrainOptions
from .clip_adapter import ClipAdapterHead
from .linear_probe import LinearProbeHead
from .tip_adapter import TipAdapterFHead, TipAdapterHead
from .zero_shot import ZeroShotHead

HEADS: dict[str, type[Head]] = {
    cls.kind: cls for cls in (ZeroShotHead, LinearProbeHead, ClipAdapterHead, TipAdapterHead, TipAdapterFHead)
}
METHODS = tuple(HEADS)


def head_class(kind: str) -> type[Head]:
    try:
        return HEADS[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, METHODS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ClipedgeError(f"--method {kind}: unknown method{hint}; expected one of {', '.join(METHODS)}") from None


__all__ = ["FewShotProblem", "HEADS", "Head", "METHODS", "TrainOptions", "head_class"]
