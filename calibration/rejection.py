"""Open-set rejection: a confidence score and a threshold below which a prediction becomes "unknown".

Two scores are compared, both "higher means more confident": the maximum
softmax probability and the negative energy ``T·logsumexp(logits / T)``
(Liu et al., 2020). The threshold is set on known-class val images for a
target false-reject rate, so a robot rejects at most that share of the
classes it was taught.
"""

from __future__ import annotations

import torch

from clipedge.runtime.rejection import REJECTION_SCORES, confidence

SCORES = REJECTION_SCORES  # the scores calibration compares


def confidence_score(logits: torch.Tensor, kind: str, temperature: float = 1.0) -> torch.Tensor:
    """The runtime's own score (clipedge.runtime.rejection.confidence), so a threshold chosen here means the
    same thing on the device."""
    return torch.from_numpy(confidence(logits.detach().double().cpu().numpy(), kind, temperature))


def threshold_for_frr(known_scores: torch.Tensor, target_frr: float) -> float:
    """The largest threshold that rejects at most ``target_frr`` of the known images (reject if score < t)."""
    ordered = known_scores.double().sort().values
    allowed = int(target_frr * len(ordered))  # how many known images may fall below the threshold
    return float(ordered[allowed]) if allowed < len(ordered) else float(ordered[-1])


def false_reject_rate(known_scores: torch.Tensor, threshold: float) -> float:
    return float((known_scores < threshold).double().mean())


def auroc(known_scores: torch.Tensor, unknown_scores: torch.Tensor) -> float:
    """Probability that a known image scores above an unknown one (ties count half): the Mann–Whitney U."""
    scores = torch.cat([known_scores, unknown_scores]).double()
    ranks = _average_ranks(scores)
    n_known, n_unknown = len(known_scores), len(unknown_scores)
    u = ranks[:n_known].sum() - n_known * (n_known + 1) / 2
    return float(u / (n_known * n_unknown))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]
