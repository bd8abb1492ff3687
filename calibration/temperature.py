"""Temperature scaling (Guo et al., 2017) and the calibration metrics that judge it.

A few-shot head's softmax is usually over- or under-confident; one scalar T,
fitted by NLL on val, fixes most of that without changing a single
prediction (argmax is invariant to T), so it is safe to bake into ``probs``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels).item())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising val NLL of ``softmax(logits / T)``; optimised over log T so T stays positive."""
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: count, mean confidence, accuracy."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high) if low > 0 else (confidence >= low) & (confidence <= high)
        count = int(inside.sum())
        rows.append({
            "low": float(low), "high": float(high), "count": count,
            "confidence": float(confidence[inside].double().mean()) if count else 0.0,
            "accuracy": float(correct[inside].mean()) if count else 0.0,
        })
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy − confidence| over equal-width confidence bins."""
    rows = reliability_bins(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / max(total, 1)
