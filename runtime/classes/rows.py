"""A new class's row, from its name's text embeddings or from its images' embeddings, on the bank's logit scale.

The readout is ``scale · e·w + b``; a new row must score like the rows beside it or it wins (or loses) every
image regardless of content. Two cases:

* by name: the normalised mean of the templates' text embeddings is what zero-shot, CLIP-Adapter and Tip-Adapter
  rows are (``rows == "text"``), so it is used as it is, bias 0. Rows a head learned (``rows == "learned"``,
  the linear probe) have their own norm and biases: the text row is scaled to the mean norm of the trained rows
  and given their mean bias, so its logits spread like theirs.
* from images: image-to-image cosines (≈0.8 for one class) are far above image-to-text ones (≈0.3), so a raw
  prototype row would take every image. The bank knows, for each class with images, the mean embedding μ_c, and
  the mean logit of class c's images under row d is exactly ``scale·μ_c·w_d + b_d`` (the readout is linear).
  The same images' raw scores under the candidate generator (the prototype normalise(μ_d), or GDA's
  ``P·μ_d, −½ μ_dᵀ P μ_d`` with the shrunk shared precision P) are fitted to those logits by one affine map
  (least squares over all pairs c, d), and the new class's raw row goes through that map. GDA is used when the
  scatter has degrees of freedom and at least two other classes have images; the prototype when only the
  calibration is possible; with fewer than two classes with images, the prototype scaled like a named row.
"""

from __future__ import annotations

import numpy as np

from .bank import ClassBank


def normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _trained(bank: ClassBank) -> np.ndarray:
    """Indices of the trained rows (all rows when none is left): the reference for a new row's norm and bias."""
    rows = [i for i, entry in enumerate(bank.provenance) if entry.get("source") == "trained"]
    return np.array(rows or list(range(len(bank.names))), dtype=np.int64)


def like_trained(bank: ClassBank, direction: np.ndarray) -> tuple[np.ndarray, float]:
    """A unit ``direction`` as a row beside the trained ones: as it is (bias 0) for text rows; at the trained rows'
    mean norm with their mean bias for learned rows."""
    if bank.rows == "text":
        return direction.astype(np.float32), 0.0
    reference = _trained(bank)
    norm = float(np.linalg.norm(bank.weights[reference], axis=1).mean())
    return (direction * norm).astype(np.float32), float(bank.bias[reference].mean())


def text_row(bank: ClassBank, text_embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """The row of a class named by ``text_embeddings`` [T, D] (one per template): their normalised mean."""
    return like_trained(bank, normalised(np.asarray(text_embeddings, dtype=np.float64).mean(axis=0)))


def solve_spd(system: np.ndarray, right: np.ndarray, tolerance: float = 1e-8) -> np.ndarray:
    """``system⁻¹ @ right`` for a symmetric positive definite ``system``, by conjugate gradients, one per column.

    Why not ``np.linalg.solve``: LAPACK's factorisations run on OpenBLAS threads, and on a loaded CPU a 128×128
    solve was measured at 0.7 ms single-threaded and 150-300 ms on two threads (the shared 2-core machine, other
    work running); CG needs only matrix products. GDA's ridge bounds the condition number by the image count N,
    and CG stops after at most rank(scatter) + 1 steps, the scatter's rank being below N.
    """
    solution = np.zeros_like(right)
    residual = right.copy()
    direction = residual.copy()
    squared = np.einsum("ij,ij->j", residual, residual)
    limit = (tolerance * np.linalg.norm(right, axis=0)) ** 2
    for _ in range(system.shape[0]):
        if np.all(squared <= limit):
            break
        product = system @ direction
        step = squared / np.maximum(np.einsum("ij,ij->j", direction, product), np.finfo(np.float64).tiny)
        solution += direction * step
        residual -= product * step
        updated = np.einsum("ij,ij->j", residual, residual)
        direction = residual + direction * (updated / np.maximum(squared, np.finfo(np.float64).tiny))
        squared = updated
    return solution


def shrunk_precision_solve(scatter: np.ndarray, images: int, classes: int, right: np.ndarray) -> np.ndarray:
    """``P @ right`` for GDA's precision (Wang et al., ICLR 2024: the empirical-Bayes ridge estimator
    ``P = D · ((N − 1) Σ + tr(Σ) I)⁻¹`` with Σ = scatter / (N − K)), without forming the inverse."""
    dim = scatter.shape[0]
    covariance = scatter.astype(np.float64) / max(images - classes, 1)
    system = (images - 1) * covariance + np.trace(covariance) * np.eye(dim)
    return dim * solve_spd(system, right)


def image_row(bank: ClassBank, embeddings: np.ndarray, scatter: np.ndarray) -> tuple[np.ndarray, float, str]:
    """(row, bias, generator) of a class learned from ``embeddings`` [n, D] beside ``bank`` (which does not hold
    it); ``scatter`` is the shared scatter with the new images included. See the module docstring."""
    mean = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
    counts = bank.image_counts
    references = np.flatnonzero(counts > 0)
    if len(references) < 2:
        row, bias = like_trained(bank, normalised(mean))
        return row, bias, "prototype"
    means = bank.image_sums[references].astype(np.float64) / counts[references, None]
    total_images, total_classes = int(counts.sum()) + len(embeddings), len(references) + 1
    columns = np.concatenate([means, mean[None]]).T  # [D, R + 1]
    if total_images > total_classes:
        generator = "gda"
        solved = shrunk_precision_solve(scatter, total_images, total_classes, columns)  # P μ per class
        raw_rows, raw_bias = solved.T, -0.5 * np.einsum("dc,dc->c", columns, solved)
    else:
        generator = "prototype"
        raw_rows = columns.T / np.maximum(np.linalg.norm(columns.T, axis=1, keepdims=True), 1e-12)
        raw_bias = np.zeros(len(raw_rows))
    raw = means @ raw_rows[:-1].T + raw_bias[:-1]  # [R, R]: class c's mean raw score under class d's generator
    target = float(bank.logit_scale) * means @ bank.weights[references].T.astype(np.float64) + bank.bias[references]
    design = np.stack([raw.ravel(), np.ones(raw.size)], axis=1)
    (slope, offset), *_ = np.linalg.lstsq(design, target.ravel(), rcond=None)
    if not slope > 0:  # the generator does not order the bank's classes as their rows do: no sound map
        row, bias = like_trained(bank, normalised(mean))
        return row, bias, "prototype"
    row = slope * raw_rows[-1] / float(bank.logit_scale)
    return row.astype(np.float32), float(slope * raw_bias[-1] + offset), generator


def class_scatter(embeddings: np.ndarray) -> np.ndarray:
    """Σ (e − μ)(e − μ)ᵀ of one class's embeddings: its share of the bank's within-class scatter."""
    centred = np.asarray(embeddings, dtype=np.float64) - np.asarray(embeddings, dtype=np.float64).mean(axis=0)
    return centred.T @ centred
