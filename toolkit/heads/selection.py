"""``--method auto``: every candidate head on the same cached features, the best val top-1 wins.

Ties go to the simpler head, in the order of ``CANDIDATES``: first by what runs
at inference (a C×D readout, then a key cache, then an adapter MLP), then by how
it is fitted (nothing, a closed form, convex, then gradient descent from a
fixed recipe). Test images are never seen here. A candidate that fails is
recorded with its reason and skipped; selection fails only if every one does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from clipedge.core.errors import ClipedgeError

from .base import FewShotProblem, Head
from .options import TrainOptions, option_flag
from .recipe import TIP_ADAPTER_SCALE, Augmentation
from .registry import head_class, head_options

log = logging.getLogger(__name__)

AUTO = "auto"
#: simplest first; a tie in val top-1 goes to the earlier method
CANDIDATES = ("zero-shot", "gda", "linear-probe", "lp++", "zs-lp", "clap", "tip-adapter", "tip-adapter-f",
              "clip-adapter")
#: the one feature extraction every candidate trains on: Tip-Adapter's cache views, which GDA, LP++ and the
#: fast linear probe use too (ZS-LP, CLAP and CLIP-Adapter train on these instead of their own views under auto)
SHARED_AUGMENTATION = Augmentation(10, TIP_ADAPTER_SCALE)
TIE_RULE = "the best val top-1; ties to the simpler head, the earlier in the candidate order"


@dataclass
class Candidate:
    method: str
    val_top1: float | None
    seconds: float
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {"method": self.method, "val_top1": self.val_top1, "seconds": round(self.seconds, 3), "error": self.error}


@dataclass
class Selection:
    head: Head
    options: TrainOptions
    candidates: list[Candidate] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {"chosen": self.head.kind, "rule": TIE_RULE, "order": list(CANDIDATES),
                "candidates": [c.to_record() for c in self.candidates]}


def auto_augmentation(views: int | None) -> Augmentation:
    return Augmentation(views or SHARED_AUGMENTATION.views, SHARED_AUGMENTATION.scale)


def check_auto_options(given: Mapping[str, Any]) -> None:
    """``--method auto`` takes only ``--views`` (of the shared features): each candidate runs its own recipe."""
    for name, value in given.items():
        if value is not None and name != "views":
            raise ClipedgeError(f"{option_flag(name)}: --method auto trains every candidate with its own recipe; "
                                "choose one --method to set it")
    if given.get("views") is not None and given["views"] < 1:
        raise ClipedgeError(f"--views {given['views']}: expected at least 1 augmented view")


def best_method(val_scores: Mapping[str, float | None]) -> str:
    """The method with the best val score, ties to the earlier in CANDIDATES (then in ``val_scores``' order)."""
    ranked = sorted(val_scores, key=lambda m: CANDIDATES.index(m) if m in CANDIDATES else len(CANDIDATES))
    scored = [m for m in ranked if val_scores[m] is not None]
    if not scored:
        raise ClipedgeError("--method auto: no candidate has a val figure")
    return max(scored, key=lambda m: (val_scores[m], -scored.index(m)))


@torch.no_grad()
def _val_correct(head: Head, problem: FewShotProblem) -> int:
    head.eval()
    logits = torch.cat([head(chunk) for chunk in problem.val_features.split(4096)])
    return int((logits.argmax(dim=-1) == problem.val_labels).sum())


def select_head(problem: FewShotProblem, common: Mapping[str, Any], candidates: Iterable[str] | None = None,
                progress: bool = True) -> Selection:
    """Fit every candidate (default: CANDIDATES) on ``problem`` and keep the best by val top-1 (``common``: seed,
    device, precision)."""
    if not problem.has_val:
        raise ClipedgeError("--method auto: needs val images to choose between methods; give a split with a val list "
                            "or a folder with enough images per class")
    results, fitted = [], {}
    bar = tqdm(list(candidates or CANDIDATES), desc="auto", unit="method", disable=not progress, leave=False)
    for kind in bar:
        bar.set_postfix(method=kind)
        started = time.perf_counter()
        try:
            options = head_options(kind, **common, progress=False)
            head = head_class(kind).fit(problem, options)
            score = _val_correct(head, problem) / len(problem.val_labels)
        except Exception as error:  # noqa: BLE001 - a failing candidate is reported and skipped, whatever it raised
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            log.warning("auto: %s failed (%s); skipped", kind, reason)
            results.append(Candidate(kind, None, time.perf_counter() - started, f"{type(error).__name__}: {reason}"))
            continue
        results.append(Candidate(kind, score, time.perf_counter() - started))
        fitted[kind] = (head, options)
    if not fitted:
        reasons = "; ".join(f"{c.method}: {c.error}" for c in results)
        raise ClipedgeError(f"--method auto: every candidate failed ({reasons})")
    chosen = best_method({c.method: c.val_top1 for c in results})
    log.debug("auto: %s chosen on val (top-1 %.4f)", chosen, next(c.val_top1 for c in results if c.method == chosen))
    head, options = fitted[chosen]
    return Selection(head, options, results)
