"""Class scores from image embeddings and a bank: the readout every clipedge head reduces to.

``logits = scale · e·Wᵀ + b  [+ α · exp(−β·(1 − e·Kᵀ)) · onehot(labels)]`` for the adapted, L2-normalised
embeddings ``e`` an adaptable model outputs. It is the same arithmetic the fused graph does after the image
encoder, in float32 on the host: a few hundred kFLOPs per image against the encoder's hundreds of MFLOPs.
"""

from __future__ import annotations

import numpy as np

from clipedge.core.errors import ClipedgeError

from .bank import ClassBank


def cache_values(bank: ClassBank) -> np.ndarray:
    """Tip-Adapter's value matrix: one-hot rows [K, C] of the cache keys' classes."""
    values = np.zeros((len(bank.cache_labels), len(bank.names)), dtype=np.float32)
    values[np.arange(len(bank.cache_labels)), bank.cache_labels] = 1.0
    return values


def bank_logits(bank: ClassBank, embeddings: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, C] logits of ``embeddings`` [N, D] under ``bank``; ``values`` is :func:`cache_values` of the
    bank when the caller keeps it between calls (it changes only when the bank does)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != bank.dim:
        raise ClipedgeError(f"embeddings: expected float32 [N, {bank.dim}] for this class bank, got "
                            f"{list(embeddings.shape)}")
    logits = np.float32(bank.logit_scale) * (embeddings @ bank.weights.T) + bank.bias
    if bank.has_cache and len(bank.cache_labels):
        affinity = np.exp(np.float32(-bank.cache_beta) * (np.float32(1.0) - embeddings @ bank.cache_keys.T))
        logits += np.float32(bank.cache_alpha) * (affinity @ (cache_values(bank) if values is None else values))
    return logits.astype(np.float32, copy=False)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` in float32, as the fused graph ends."""
    scaled = logits / np.float32(temperature) if temperature != 1.0 else logits
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)
