"""The methods: one head class per method, each registered under its name with the options it owns."""

from __future__ import annotations

from .base import CacheReadout, FewShotProblem, Head, Readout, TrainOptions
from .clip_adapter import ClipAdapterHead
from .linear_probe import LinearProbeHead
from .registry import HEADS, head_class, head_options, register_head
from .tip_adapter import TipAdapterFHead, TipAdapterHead
from .zero_shot import ZeroShotHead

#: the order tables, plots and the demo list the methods in: from no training to the most
METHODS = tuple(cls.kind for cls in (ZeroShotHead, LinearProbeHead, ClipAdapterHead, TipAdapterHead, TipAdapterFHead))

__all__ = ["CacheReadout", "FewShotProblem", "HEADS", "Head", "METHODS", "Readout", "TrainOptions", "head_class", "head_options", "register_head"]
