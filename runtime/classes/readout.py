"""Class scores from image embeddings and a bank: the readout every clipedge head reduces to.

``logits = scale · e·Wᵀ + b  [+ α · exp(−β·(1 − e·Kᵀ)) · onehot(labels)]`` for the adapted, L2-normalised
embeddings ``e`` an adaptable model outputs. It is the same arithmetic the fused graph does after the image
encoder, in float32 on the host: a few hundred kFLOPs per image against the encoder's hundreds of MFLOPs.
"""

from __future__ import annotations

import numpy as np

from clipedge.core.errors import ClipedgeError

from .bank import ClassBank

#: multiply-adds up to which a product runs in numpy's own loops (einsum) rather than in BLAS. OpenBLAS threads
#: a [1, 128] × [128, 128] product, and right after an onnxruntime call (whose threads still spin on the cores)
#: its second thread waits: measured 10-15 ms for it against 0.02 ms in einsum on the loaded 2-core machine, and
#: 9.7 ms against 0.14 ms at batch 32. Above this size BLAS is faster whatever the threading costs.
SMALL_PRODUCT = 1 << 21


def product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` for [N, D] × [D, R], in einsum when small (see SMALL_PRODUCT), else in BLAS."""
    if left.shape[0] * left.shape[1] * right.shape[1] <= SMALL_PRODUCT:
        return np.einsum("nd,dr->nr", left, right)
    return left @ right


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
    logits = np.float32(bank.logit_scale) * product(embeddings, bank.weights.T) + bank.bias
    if bank.has_cache and len(bank.cache_labels):
        affinity = np.exp(np.float32(-bank.cache_beta) * (np.float32(1.0) - product(embeddings, bank.cache_keys.T)))
        logits += np.float32(bank.cache_alpha) * product(affinity, cache_values(bank) if values is None else values)
    return logits.astype(np.float32, copy=False)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` in float32, as the fused graph ends."""
    scaled = logits / np.float32(temperature) if temperature != 1.0 else logits
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)
