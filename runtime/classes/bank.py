"""The class bank: an adaptable model's classes as data beside it (``model.classes.npz``), saved and loaded whole.

An ``--adaptable`` export ends at the L2-normalised image embedding; the bank holds what turns embeddings into
class scores (the rows, the Tip-Adapter cache, calibration) plus what a device needs to learn more classes
(per-class image sums and counts, the shared within-class scatter). It is a NumPy ``.npz`` read without pickle,
whose ``manifest`` array is UTF-8 JSON following ``clipedge/runtime/schemas/class_bank.schema.json``.

Integrity: the manifest's ``checksum`` is a SHA-256 over every array (name, dtype, shape, bytes, in
:data:`ARRAYS` order) followed by the manifest itself without its checksum, canonically serialised, so an edit
to a row or to a class name is refused, not silently used. A bank also records the embedding space it belongs to
(backbone, weights, width D, the image model file's hash): rows from another space would classify nonsense.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.atomic import write_atomically
from clipedge.core.errors import ClipedgeError

from .manifest import manifest_problem

FORMAT = "clipedge-class-bank"
FORMAT_VERSION = 1
BANK_SUFFIX = ".classes.npz"
#: the arrays of a bank file, in checksum order, with their dtypes
ARRAYS = {"weights": np.float32, "bias": np.float32, "cache_keys": np.float32, "cache_labels": np.int64,
          "image_sums": np.float32, "image_counts": np.int64, "scatter": np.float32}
SOURCES = ("trained", "name", "images", "name+images")


@dataclass
class ClassBank:
    """Classes as data. Row ``i`` of ``weights``, ``bias``, ``image_sums``, ``image_counts`` and ``provenance`` is
    class ``names[i]``; ``cache_labels`` index those rows. ``cache_alpha``/``cache_beta`` are None for a head
    without a Tip-Adapter cache. ``rows``: "text" when the trained rows are text embeddings (zero-shot, CLIP-Adapter,
    Tip-Adapter), "learned" when training produced them (linear probe)."""

    names: list[str]
    weights: np.ndarray
    bias: np.ndarray
    logit_scale: float
    cache_keys: np.ndarray
    cache_labels: np.ndarray
    cache_alpha: float | None
    cache_beta: float | None
    image_sums: np.ndarray
    image_counts: np.ndarray
    scatter: np.ndarray
    provenance: list[dict[str, Any]]
    head_kind: str
    rows: str
    temperature: float = 1.0
    rejection: dict[str, Any] | None = None
    space: dict[str, Any] = field(default_factory=dict)
    text_model: dict[str, Any] | None = None
    templates: list[str] = field(default_factory=list)
    revision: int = 0

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def has_cache(self) -> bool:
        return self.cache_alpha is not None

    def arrays(self) -> dict[str, np.ndarray]:
        """The bank's arrays by name, in :data:`ARRAYS` order and dtypes."""
        return {name: np.ascontiguousarray(getattr(self, name), dtype=dtype) for name, dtype in ARRAYS.items()}

    def manifest(self) -> dict[str, Any]:
        """The manifest JSON without its checksum; ``names`` is authoritative for each class's name."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "revision": int(self.revision),
            "classes": [{**entry, "name": name} for name, entry in zip(self.names, self.provenance)],
            "logit_scale": float(self.logit_scale),
            "cache": None if self.cache_alpha is None else {"alpha": float(self.cache_alpha), "beta": float(self.cache_beta)},
            "head": {"kind": self.head_kind, "rows": self.rows},
            "temperature": float(self.temperature), "rejection": self.rejection, "space": self.space,
            "text_model": self.text_model, "templates": list(self.templates),
        }


def bank_path_for(model: str | Path) -> Path:
    """Where a model's bank lives: ``model.onnx`` and an engine built from it (``model.engine``, ``model.plan``)
    share ``model.classes.npz``."""
    model = Path(model)
    return model.with_name(model.stem + BANK_SUFFIX)


def checksum_of(arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> str:
    """SHA-256 (hex) over the arrays in :data:`ARRAYS` order, then the manifest without ``checksum``."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        array = arrays[name]
        digest.update(f"{name}:{array.dtype.str}:{list(array.shape)};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    digest.update(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return digest.hexdigest()


def check_consistent(bank: ClassBank, source: str) -> None:
    """Refuse a bank whose arrays disagree with each other or with its class list (one line naming ``source``)."""
    count, dim = len(bank.names), bank.weights.shape[1] if bank.weights.ndim == 2 else -1
    expected = {"weights": (count, dim), "bias": (count,), "image_sums": (count, dim), "image_counts": (count,),
                "scatter": (dim, dim), "cache_keys": (len(bank.cache_labels), dim), "cache_labels": (len(bank.cache_labels),)}
    for name, shape in expected.items():
        if getattr(bank, name).shape != shape:
            raise ClipedgeError(f"class bank {source}: {name} has shape {list(getattr(bank, name).shape)}, expected "
                                f"{list(shape)} for {count} classes of width {dim}")
    if len(bank.provenance) != count:
        raise ClipedgeError(f"class bank {source}: {len(bank.provenance)} provenance entries for {count} classes")
    if len(set(bank.names)) != count:
        raise ClipedgeError(f"class bank {source}: class names repeat")
    if len(bank.cache_labels) and not (0 <= bank.cache_labels.min() and bank.cache_labels.max() < count):
        raise ClipedgeError(f"class bank {source}: cache_labels index classes outside 0..{count - 1}")
    if bank.space.get("dim", dim) != dim:
        raise ClipedgeError(f"class bank {source}: rows have width {dim} but its space says dim {bank.space['dim']}")


def save_bank(bank: ClassBank, path: str | Path) -> None:
    """Write ``bank`` to ``path`` atomically (a reader sees the old bank or the new one), with its checksum."""
    path = Path(path)
    check_consistent(bank, str(path))
    arrays, manifest = bank.arrays(), bank.manifest()
    manifest["checksum"] = checksum_of(arrays, manifest)
    problem = manifest_problem(manifest)
    if problem:
        raise ClipedgeError(f"class bank {path}: {problem}")
    encoded = np.frombuffer(json.dumps(manifest, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, manifest=encoded, **arrays)
    if not path.parent.is_dir():
        raise ClipedgeError(f"class bank {path}: folder {path.parent} does not exist")
    try:
        write_atomically(path, buffer.getvalue())
    except OSError as error:
        raise ClipedgeError(f"class bank {path}: cannot write it ({error.strerror or type(error).__name__})") from None


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and arrays of a bank file; one-line errors for what is not one."""
    if not path.is_file():
        raise ClipedgeError(f"class bank {path}: no such file (an adaptable model's bank: `clipedge export RUN --adaptable`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise ClipedgeError(f"class bank {path}: not a readable .npz bank (truncated or another format: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    missing = [name for name in ("manifest", *ARRAYS) if name not in contents]
    if missing:
        raise ClipedgeError(f"class bank {path}: lacks the arrays {', '.join(missing)}")
    try:
        manifest = json.loads(contents.pop("manifest").astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ClipedgeError(f"class bank {path}: its manifest is not UTF-8 JSON ({error})") from None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT \
            and isinstance(manifest.get("format_version"), int) and manifest["format_version"] > FORMAT_VERSION:
        raise ClipedgeError(f"class bank {path}: format version {manifest['format_version']} is newer than this "
                            f"clipedge reads ({FORMAT_VERSION}); upgrade clipedge")
    problem = manifest_problem(manifest)
    if problem:
        raise ClipedgeError(f"class bank {path}: {problem}")
    for name, dtype in ARRAYS.items():
        if contents[name].dtype != dtype:
            raise ClipedgeError(f"class bank {path}: {name} is {contents[name].dtype}, expected {np.dtype(dtype)}")
    if checksum_of(contents, manifest) != manifest["checksum"]:
        raise ClipedgeError(f"class bank {path}: checksum mismatch (the file was edited or damaged); restore it or "
                            "write it again with `clipedge classes` or `clipedge export RUN --adaptable`")
    return manifest, contents


def space_mismatch(bank_space: dict[str, Any], expect_space: dict[str, Any]) -> str | None:
    """The first fingerprint field of ``expect_space`` that ``bank_space`` does not share, as a phrase, or None."""
    for key, value in expect_space.items():
        if bank_space.get(key) != value:
            return f"{key} is {bank_space.get(key)!r} in the bank but {value!r} for the model"
    return None


def load_bank(path: str | Path, expect_space: dict[str, Any] | None = None) -> ClassBank:
    """Read and verify a bank (checksum, schema, consistency, and the embedding space when ``expect_space`` is
    given: every key it names must match); one-line errors name the file and what is wrong."""
    path = Path(path)
    manifest, arrays = _read(path)
    cache = manifest["cache"]
    bank = ClassBank(
        names=[entry["name"] for entry in manifest["classes"]], **arrays, logit_scale=float(manifest["logit_scale"]),
        cache_alpha=None if cache is None else float(cache["alpha"]), cache_beta=None if cache is None else float(cache["beta"]),
        provenance=[dict(entry) for entry in manifest["classes"]],
        head_kind=manifest["head"]["kind"], rows=manifest["head"]["rows"], temperature=float(manifest["temperature"]),
        rejection=manifest["rejection"], space=manifest["space"], text_model=manifest["text_model"],
        templates=list(manifest["templates"]), revision=int(manifest["revision"]))
    check_consistent(bank, str(path))
    if expect_space is not None:
        mismatch = space_mismatch(bank.space, expect_space)
        if mismatch:
            raise ClipedgeError(f"class bank {path}: belongs to another model or backbone ({mismatch}); use the bank "
                                "exported with this model")
    return bank
