"""The run directory (docs/design.md §5.1): ``clipedge.json`` + ``head.safetensors`` + ``split.json`` + ``skipped.json`` + ``cache/``.

A run is self-describing: eval, export and the runtime rebuild everything from
it. It is written into a sibling temporary directory and renamed into place
when complete, so an interrupted ``train`` never leaves a half-written run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from clipedge.core.atomic import as_if_made_by_mkdir, staging_folder, write_atomically
from clipedge.core.errors import ClipedgeError
from clipedge.core.images import SkippedFile
from clipedge.core.lock import check_unlocked

from .backbone import BackboneSpec
from .heads import Head, head_class
from .run_integrity import check_against_schema, check_head_fits, check_recorded_shapes, tensor_shapes

FORMAT_VERSION = 1
MANIFEST = "clipedge.json"
HEAD_FILE = "head.safetensors"
CACHE_DIR = "cache"
SPLIT_FILE = "split.json"  # the exact train/val/test images, CoOp format
SKIPPED_FILE = "skipped.json"  # files that could not be decoded, with why and at which step: never loaded again


@dataclass
class Run:
    """A loaded run directory: its manifest and its trained head."""

    path: Path
    manifest: dict[str, Any]
    head: Head

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec.from_dict(self.manifest["backbone"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def method(self) -> str:
        return self.manifest["head"]["kind"]


def read_manifest(run_path: Path) -> dict[str, Any]:
    path = Path(run_path) / MANIFEST
    if not Path(run_path).is_dir():
        raise ClipedgeError(f"RUN {run_path}: no such run directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipedgeError(f"RUN {run_path}: not a run directory (no {MANIFEST}; create one with `clipedge train`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"RUN {path}: corrupt manifest ({error})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int):
        raise ClipedgeError(f"RUN {path}: manifest has no integer format_version")
    if version > FORMAT_VERSION:
        raise ClipedgeError(
            f"RUN {path}: manifest format version {version} is newer than this clipedge supports "
            f"(version {FORMAT_VERSION}); upgrade clipedge"
        )
    check_against_schema(path, manifest)
    return manifest


def load_run(run_path: str | Path) -> Run:
    """Load a run directory written by ``clipedge train``; its head is checked against its manifest."""
    run_path = Path(run_path)
    manifest = read_manifest(run_path)
    head_path = run_path / HEAD_FILE
    try:
        tensors = load_file(str(head_path))
    except FileNotFoundError:
        raise ClipedgeError(f"RUN {run_path}: missing {HEAD_FILE}") from None
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ClipedgeError(f"RUN {head_path}: corrupt head weights ({type(error).__name__})") from None
    check_recorded_shapes(head_path, tensors, manifest["head"].get("tensors"))
    spec = manifest["head"]
    try:
        head = head_class(spec["kind"]).restore(tensors, spec.get("hparams", {}))
    except (RuntimeError, TypeError, KeyError, ValueError) as error:
        raise ClipedgeError(f"RUN {head_path}: head weights do not match the manifest ({str(error).splitlines()[0]})") from None
    check_head_fits(head_path, head, manifest)
    return Run(run_path, manifest, head)


def write_run_files(folder: Path, manifest: dict[str, Any], head: Head) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(folder / HEAD_FILE))
    manifest = {**manifest, "head": {**manifest["head"], "tensors": tensor_shapes(head)}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty RUN unless --overwrite; checked before any slow work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ClipedgeError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ClipedgeError(f"--out {out}: directory is not empty; pass --overwrite to replace it")
    if not out.parent.exists():
        raise ClipedgeError(f"--out {out}: parent folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ClipedgeError(f"--out {out}: parent folder {out.parent} is not writable")
    check_unlocked(out)


@contextmanager
def staged_run_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``out``; on success it replaces ``out`` atomically.

    The destination's lock is held throughout (clipedge.core.atomic.staging_folder), and ``out`` is checked
    again under it: a run that another ``train`` published while this one was starting is not replaced without
    ``--overwrite``. An existing run's feature cache is linked into the staging folder first, so ``--overwrite``
    re-runs still reuse features without a second copy on the disk (cache files are replaced, never rewritten
    in place, so a link cannot change under the old run).
    """
    out = Path(out)
    with staging_folder(out) as staging:
        as_if_made_by_mkdir(staging)
        check_output_dir(out, overwrite)
        if (out / CACHE_DIR).is_dir():
            shutil.copytree(out / CACHE_DIR, staging / CACHE_DIR, copy_function=_link_or_copy)
        yield staging
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)


def update_manifest(run_path: Path, key: str, value: Any) -> dict[str, Any]:
    """Set one top-level manifest entry, replacing the file atomically."""
    run_path = Path(run_path)
    manifest = read_manifest(run_path)
    manifest[key] = value
    write_atomically(run_path / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def skipped_entries(files: list[SkippedFile], stage: str) -> list[dict[str, str]]:
    """skipped.json rows: path, one-word reason, the decoder's words, and the step that met the file."""
    return [{**f.to_dict(), "stage": stage} for f in files]


def write_skipped(folder: Path, entries: list[dict[str, str]]) -> None:
    write_atomically(Path(folder) / SKIPPED_FILE, json.dumps({"files": entries}, indent=2) + "\n")


def read_skipped(run_path: Path) -> list[dict[str, str]]:
    """The run's skipped.json rows ([] for runs written before it existed or with nothing skipped)."""
    path = Path(run_path) / SKIPPED_FILE
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"RUN {path}: corrupt list of skipped files ({error})") from None
    return list(content.get("files", [])) if isinstance(content, dict) else []


def record_skipped(run_path: Path, files: list[SkippedFile], stage: str) -> None:
    """Add files a later step (eval, calibrate, export) could not decode, so no step loads them again."""
    known = read_skipped(run_path)
    seen = {entry["path"] for entry in known}
    new = [entry for entry in skipped_entries(files, stage) if entry["path"] not in seen]
    if new:
        write_skipped(run_path, known + new)
