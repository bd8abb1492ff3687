"""The methods: one head class per method, each registered under its name with the options it owns."""

from __future__ import annotations

from .base import CacheReadout, FewShotProblem, Head, Readout
from .clap import ClapHead
from .clip_adapter import ClipAdapterHead
from .gda import GdaHead
from .linear_probe import LinearProbeHead
from .lp_plus_plus import LpPlusPlusHead
from .options import TrainOptions
from .registry import HEADS, head_class, head_options, register_head
from .tip_adapter import TipAdapterFHead, TipAdapterHead
from .zero_shot import ZeroShotHead
from .zs_lp import ZsLpHead

#: the order tables, plots and the demo list the methods in: the adapters of 2021–22, then their successors
METHODS = tuple(cls.kind for cls in (ZeroShotHead, LinearProbeHead, ClipAdapterHead, TipAdapterHead, TipAdapterFHead,
                                     ZsLpHead, ClapHead, GdaHead, LpPlusPlusHead))

__all__ = ["CacheReadout", "FewShotProblem", "HEADS", "Head", "METHODS", "Readout", "TrainOptions", "head_class",
           "head_options", "register_head"]
