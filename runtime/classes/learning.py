"""Editing a bank: a class added by name, from images or both, removed, renamed. Pure numpy, nothing in place.

Every edit returns a new :class:`ClassBank` (revision + 1) and leaves its argument untouched, so a failed edit
changes nothing and a reader holding the old bank keeps a consistent one. What "both" means: the row is the mean
of the name's row and the images' row (each already on the bank's scale, :mod:`.rows`), and when the bank has a
Tip-Adapter cache the images also become cache keys, as Tip-Adapter combines zero-shot rows with its cache.

Removing or replacing a class keeps its share of the shared scatter: the bank stores the sum over classes, not
each class's part, and the shared covariance is an estimate of within-class spread in this embedding space,
which the images taught whatever their class is now called.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import SkippedFile

from .bank import ClassBank
from .rows import class_scatter, image_row, normalised, text_row

#: the label a rejected prediction carries (runtime.classifier.UNKNOWN): no class may take it
RESERVED_NAMES = ("unknown",)
#: weight of the name's row in a class added from both a name and images (the images' row gets the rest)
NAME_WEIGHT = 0.5


@dataclass(frozen=True)
class LearnedClass:
    """What an add did: the class's row index, its source, how its image row was made ("gda", "prototype")."""

    name: str
    index: int
    source: str
    images: int
    templates: int
    generator: str | None
    replaced: bool
    #: image files that did not decode (the others were used), each with the decode policy's reason
    skipped: tuple[SkippedFile, ...] = ()


def check_name(name: object, option: str = "class name") -> str:
    """A usable class name (surrounding whitespace dropped), or a one-line refusal."""
    if not isinstance(name, str):
        raise ClipedgeError(f"{option} {name!r}: expected a string, got {type(name).__name__}")
    stripped = name.strip()
    if not stripped:
        raise ClipedgeError(f"{option} {name!r}: empty; expected a name such as 'forklift'")
    bad = next((c for c in stripped if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ClipedgeError(f"{option} {name!r}: contains a line break or control character (U+{ord(bad):04X}); "
                            "class names are one line of printable text")
    if stripped.lower() in RESERVED_NAMES:
        raise ClipedgeError(f"{option} {stripped!r}: reserved for rejected predictions; choose another name")
    return stripped


def check_new_name(bank: ClassBank, name: object, replace: bool) -> str:
    """A valid name for a class to add: not in the bank unless ``replace``."""
    name = check_name(name)
    if name in bank.names and not replace:
        raise ClipedgeError(f"class {name!r}: already in the bank; replace it explicitly (replace=True, --replace)")
    return name


def index_of(bank: ClassBank, name: str) -> int:
    if name not in bank.names:
        raise ClipedgeError(f"class {name!r}: not in the bank (classes: {', '.join(bank.names)})")
    return bank.names.index(name)


def _without(bank: ClassBank, index: int) -> ClassBank:
    """``bank`` without row ``index`` and its cache keys (labels above it shift down); revision unchanged."""
    keep = np.arange(len(bank.names)) != index
    keys = bank.cache_labels != index
    labels = bank.cache_labels[keys]
    return dataclasses.replace(
        bank, names=[n for i, n in enumerate(bank.names) if i != index], weights=bank.weights[keep],
        bias=bank.bias[keep], image_sums=bank.image_sums[keep], image_counts=bank.image_counts[keep],
        provenance=[p for i, p in enumerate(bank.provenance) if i != index], cache_keys=bank.cache_keys[keys],
        cache_labels=labels - (labels > index))


def _inserted(bank: ClassBank, index: int, name: str, row: np.ndarray, bias: float, entry: dict,
              image_sum: np.ndarray, count: int, keys: np.ndarray) -> ClassBank:
    """``bank`` with a class at row ``index`` (labels at or above it shift up) and its cache keys appended."""
    labels = bank.cache_labels + (bank.cache_labels >= index)
    return dataclasses.replace(
        bank, names=[*bank.names[:index], name, *bank.names[index:]],
        weights=np.insert(bank.weights, index, row.astype(np.float32), axis=0),
        bias=np.insert(bank.bias, index, np.float32(bias)),
        image_sums=np.insert(bank.image_sums, index, image_sum.astype(np.float32), axis=0),
        image_counts=np.insert(bank.image_counts, index, count),
        provenance=[*bank.provenance[:index], entry, *bank.provenance[index:]],
        cache_keys=np.concatenate([bank.cache_keys, keys.astype(np.float32)]),
        cache_labels=np.concatenate([labels, np.full(len(keys), index, dtype=np.int64)]))


def add_class(bank: ClassBank, name: str, text_embeddings: np.ndarray | None = None,
              image_embeddings: np.ndarray | None = None, prompt: str | None = None,
              replace: bool = False) -> tuple[ClassBank, LearnedClass]:
    """``bank`` with class ``name`` learned from its templates' ``text_embeddings`` [T, D], its images'
    ``image_embeddings`` [n, D], or both; ``replace`` allows an existing name (its row index is kept)."""
    name = check_new_name(bank, name, replace)
    if text_embeddings is None and image_embeddings is None:
        raise ClipedgeError(f"class {name!r}: give images, a name to embed, or both")
    replaced = name in bank.names
    index = bank.names.index(name) if replaced else len(bank.names)
    base = _without(bank, index) if replaced else bank
    rows, biases, generator = [], [], None
    zeros = np.zeros(bank.dim, dtype=np.float32)
    image_sum, count, scatter, keys = zeros, 0, base.scatter, np.zeros((0, bank.dim), dtype=np.float32)
    if text_embeddings is not None:
        row, bias = text_row(base, text_embeddings)
        rows.append(row)
        biases.append(bias)
    if image_embeddings is not None:
        embeddings = np.stack([normalised(e) for e in np.asarray(image_embeddings, dtype=np.float64)])
        scatter = (base.scatter.astype(np.float64) + class_scatter(embeddings)).astype(np.float32)
        row, bias, generator = image_row(base, embeddings, scatter)
        rows.append(row)
        biases.append(bias)
        image_sum, count = embeddings.sum(axis=0), len(embeddings)
        if base.has_cache:
            keys = embeddings
    weight = NAME_WEIGHT if len(rows) == 2 else 1.0
    row = weight * rows[0] + (1.0 - weight) * rows[-1]
    bias = weight * biases[0] + (1.0 - weight) * biases[-1]
    source = "name+images" if len(rows) == 2 else "name" if text_embeddings is not None else "images"
    templates = 0 if text_embeddings is None else len(text_embeddings)
    revision = bank.revision + 1
    entry = {"name": name, "source": source, "images": count, "prompt": prompt, "templates": templates,
             "revision": revision}
    edited = _inserted(dataclasses.replace(base, scatter=scatter, revision=revision), index, name, row, bias, entry,
                       image_sum, count, keys)
    return edited, LearnedClass(name, index, source, count, templates, generator, replaced)


def remove_class(bank: ClassBank, name: str) -> ClassBank:
    """``bank`` without class ``name``; the last class cannot be removed (a classifier needs one)."""
    index = index_of(bank, name)
    if len(bank.names) == 1:
        raise ClipedgeError(f"class {name!r}: the last class in the bank; a classifier needs at least one (add "
                            "another class first)")
    return dataclasses.replace(_without(bank, index), revision=bank.revision + 1)


def rename_class(bank: ClassBank, old: str, new: str) -> ClassBank:
    """``bank`` with class ``old`` called ``new`` (its row, images and cache keys unchanged)."""
    index = index_of(bank, old)
    new = check_name(new, "new class name")
    if new in bank.names and new != old:
        raise ClipedgeError(f"class {new!r}: already in the bank; remove it first or choose another name")
    revision = bank.revision + 1
    names = [new if i == index else n for i, n in enumerate(bank.names)]
    provenance = [{**p, "name": new, "revision": revision} if i == index else p for i, p in enumerate(bank.provenance)]
    return dataclasses.replace(bank, names=names, provenance=provenance, revision=revision)
