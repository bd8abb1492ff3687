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


class BankReadout:
    """The readout of one bank, with its matrices laid out once: the scaled class rows and the cache keys
    side by side in one [D, C + K] matrix (one product per call), the keys grouped by class so that the cache
    term is a per-class sum of affinities.

    Prepared when a bank is loaded or swapped, so a call does its products and sums and nothing else: right after
    an onnxruntime call each extra numpy operation costs several microseconds (BENCHMARKS.md, "Classes as data").
    The keys are copied, not viewed: at ImageNet scale (K = 16,000, D = 512) the copy holds 31 MiB more, but
    products on the bank's own [K, D] keys took twice as long at batch 1, the camera's batch
    (benchmarks/readout_layout.py). The per-class sum replaces the graph's [K, C] one-hot product, which at that
    scale held 61 MiB and took 2.0–2.8 ms at batch 1 against 0.01–0.03 ms.
    """

    def __init__(self, bank: ClassBank):
        self.dim, self.classes = bank.dim, len(bank.names)
        columns = [np.float32(bank.logit_scale) * bank.weights]
        self.cached = bool(bank.has_cache and len(bank.cache_labels))
        if self.cached:
            by_class = np.argsort(bank.cache_labels, kind="stable")
            columns.append(bank.cache_keys[by_class])
            self.keyed_classes, self.first_keys = np.unique(bank.cache_labels[by_class], return_index=True)
            self.every_class_keyed = len(self.keyed_classes) == self.classes
            self.alpha, self.beta = np.float32(bank.cache_alpha), np.float32(bank.cache_beta)
        self.columns = np.ascontiguousarray(np.concatenate(columns).T, dtype=np.float32)
        self.bias = np.asarray(bank.bias, dtype=np.float32)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 [N, C] logits of ``embeddings`` [N, D]."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ClipedgeError(f"embeddings: expected float32 [N, {self.dim}] for this class bank, got "
                                f"{list(embeddings.shape)}")
        scores = product(embeddings, self.columns)
        logits = scores[:, :self.classes] + self.bias
        if self.cached:
            affinity = np.exp(self.beta * (scores[:, self.classes:] - np.float32(1.0)))
            per_class = np.add.reduceat(affinity, self.first_keys, axis=1)
            per_class *= self.alpha
            if self.every_class_keyed:
                logits += per_class
            else:
                logits[:, self.keyed_classes] += per_class
        return logits


def bank_logits(bank: ClassBank, embeddings: np.ndarray) -> np.ndarray:
    """float32 [N, C] logits of ``embeddings`` [N, D] under ``bank``; a caller that reads one bank many times
    keeps a :class:`BankReadout` instead."""
    return BankReadout(bank)(embeddings)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` in float32, as the fused graph ends."""
    scaled = logits / np.float32(temperature) if temperature != 1.0 else logits
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def bank_probabilities(bank: ClassBank, embeddings: np.ndarray) -> np.ndarray:
    """What the runtime makes of an adaptable model's output: the bank's logits, softmax at its temperature."""
    return probabilities(BankReadout(bank)(embeddings), bank.temperature)
