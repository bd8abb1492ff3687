"""Labelled image sets: an image folder or a CoOp-style split file, split into train/val/test.

The split is fixed by ``split_seed`` and independent of the few-shot seed, so
results for several few-shot seeds are measured on the same test images, as in
the CoOp protocol the papers use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, SkippedFile, check_image
from clipedge.core.labels import check_class_names

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.2
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``path`` is absolute, ``relpath`` is what fingerprints use."""

    path: Path
    relpath: str
    label: int


@dataclass
class LabelledImages:
    """A data set with its class names and its three splits."""

    root: Path
    class_names: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """Content-addressed identity of the whole data set (names, sizes, labels, split)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.class_names).encode())
        for split in SPLITS:
            for sample in self.splits[split]:
                stat = sample.path.stat()
                digest.update(f"{split}|{sample.relpath}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


def prompt_ready_name(name: str) -> str:
    """``apple_pie`` → ``apple pie``: what CoOp, Tip-Adapter and CLIP-Adapter put into the prompt templates."""
    return name.replace("_", " ").strip()


def class_name_from_folder(folder: str) -> str:
    return prompt_ready_name(folder)


def _listed_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _holdout(samples: list[Sample], seed: int) -> dict[str, list[Sample]]:
    """Per class, hold out val and test at fixed fractions (at least one each when possible)."""
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        members = by_class[label][:]
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        n_test = max(1, round(n * TEST_FRACTION)) if n >= 3 else 0
        n_val = max(1, round(n * VAL_FRACTION)) if n >= 3 else 0
        splits["test"] += members[:n_test]
        splits["val"] += members[n_test : n_test + n_val]
        splits["train"] += members[n_test + n_val :]
    return splits


def scan_image_folder(root: Path, split_seed: int = 0, decoding: DecodeOptions = DecodeOptions()) -> LabelledImages:
    """Read ``root/<class>/<images>``; class names come from folder names (``_`` becomes a space).

    Every file's header is checked; files that are not usable images are skipped with their reason."""
    root = Path(root)
    if not root.is_dir():
        raise ClipedgeError(f"DATA {root}: no such folder (expected one subfolder of images per class)")
    folders = class_folders(root)
    if len(folders) < 2:
        raise ClipedgeError(
            f"DATA {root}: found {len(folders)} class folder(s); a classifier needs at least 2 (one subfolder per class)"
        )
    class_names = [class_name_from_folder(f.name) for f in folders]
    check_class_names(class_names, f"DATA {root}")
    duplicates = [name for name, count in Counter(class_names).items() if count > 1]
    if duplicates:
        raise ClipedgeError(f"DATA {root}: folders map to the same class name {duplicates[0]!r}")
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    for label, folder in enumerate(folders):
        good = []
        for path in _listed_files(folder):
            problem = check_image(path, decoding)
            if problem is None:
                good.append(path)
            else:
                skipped.append(problem)
        if not good:
            raise ClipedgeError(f"DATA {folder}: class folder has no readable image")
        samples += [Sample(p.resolve(), p.relative_to(root).as_posix(), label) for p in good]
    _report_skipped(root, skipped)
    return LabelledImages(root.resolve(), class_names, _holdout(samples, split_seed), skipped)


def class_folders(root: Path) -> list[Path]:
    """The subfolders of ``root``, less hidden ones and symlinks that loop back to ``root`` or above it
    (``DATA/self -> .`` would make a class of every image), which are skipped with a warning."""
    folders = []
    for folder in _subfolders(root):
        if _loops(root, folder):
            log.warning("skipped %s: a symlink to %s, which contains DATA itself (a loop, not a class)",
                        folder, folder.resolve())
        else:
            folders.append(folder)
    return folders


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loops(root: Path, folder: Path) -> bool:
    return folder.is_symlink() and root.resolve().is_relative_to(folder.resolve())


def _report_skipped(root: Path, skipped: list[SkippedFile]) -> None:
    if skipped:
        shown = ", ".join(f"{s.path.name} ({s.reason})" for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log.warning("skipped %d unreadable file(s) under %s: %s", len(skipped), root, shown)


def read_split_file(root: Path, split_file: Path, decoding: DecodeOptions = DecodeOptions(),
                    known_unreadable: frozenset[Path] = frozenset()) -> LabelledImages:
    """Read a CoOp split JSON: ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``.

    Class names become prompt-ready (``_`` → space). A file whose splits share an image, or that names one
    label two ways, is refused: either would make the reported accuracy mean something else than it says.
    ``known_unreadable`` (a run's skipped.json) are left out without being opened again.
    """
    root, split_file = Path(root), Path(split_file)
    if not root.is_dir():
        raise ClipedgeError(f"DATA {root}: no such folder")
    try:
        content = json.loads(split_file.read_text())
    except FileNotFoundError:
        raise ClipedgeError(f"--split {split_file}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"--split {split_file}: not valid JSON ({error})") from None
    if not isinstance(content, dict) or not all(isinstance(content.get(s), list) for s in SPLITS):
        raise ClipedgeError(f"--split {split_file}: expected an object with 'train', 'val' and 'test' lists")
    names: dict[int, str] = {}
    roots = data_roots(root)
    listed_in: dict[Path, str] = {}
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    skipped: list[SkippedFile] = []
    for split in SPLITS:
        for entry in content[split]:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int)):
                raise ClipedgeError(f"--split {split_file}: {split} entry {entry!r} is not [path, label, class name]")
            relpath, label, name = entry
            _check_label_name(split_file, names, label, str(name), split)
            path = _inside(roots, relpath, split_file, split)
            _check_disjoint(split_file, listed_in, path, relpath, split)
            if path in known_unreadable:
                continue
            problem = check_image(path, decoding)
            if problem is None:
                splits[split].append(Sample(path, str(relpath), label))
            else:
                skipped.append(problem)
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise ClipedgeError(f"--split {split_file}: labels must be 0..C-1 with C >= 2, got {sorted(names)[:10]}")
    class_names = [prompt_ready_name(names[i]) for i in range(len(names))]
    check_class_names(class_names, f"--split {split_file}")
    shared = [name for name, count in Counter(class_names).items() if count > 1]
    if shared:
        labels = [i for i, name in enumerate(class_names) if name == shared[0]]
        raise ClipedgeError(f"--split {split_file}: labels {labels[0]} and {labels[1]} share the class name {shared[0]!r}")
    present = {s.label for s in splits["train"]}
    empty = [class_names[i] for i in range(len(names)) if i not in present]
    if empty:
        raise ClipedgeError(f"--split {split_file}: class {empty[0]!r} has no readable training image")
    _report_skipped(root, skipped)
    return LabelledImages(root.resolve(), class_names, splits, skipped)


def data_roots(root: Path) -> list[Path]:
    """Where a split file's entries may point, symlinks resolved: DATA, and the folders its class-folder symlinks
    point to (an image folder's classes may be symlinks, and a run's split.json lists their files)."""
    return [root.resolve(), *(folder.resolve() for folder in _subfolders(root)
                              if folder.is_symlink() and not _loops(root, folder))]


def _inside(roots: list[Path], relpath: str, split_file: Path, split: str) -> Path:
    """The entry's file, symlinks resolved, refused unless it lies inside DATA: a split file is data, and data
    must not make clipedge read (and train on, and cache features of) ``../../etc/shadow``."""
    path = (roots[0] / relpath).resolve()
    if not any(path.is_relative_to(allowed) for allowed in roots):
        raise ClipedgeError(f"--split {split_file}: {split} entry {relpath!r} resolves to {path}, outside the data "
                            f"root {roots[0]}; expected paths inside DATA")
    return path


def missing_splits(data: LabelledImages) -> list[str]:
    """What a run on ``data`` cannot measure: one sentence per empty val or test split (train's warning and the
    manifest's ``data.notes``), so empty metrics are explained rather than silent."""
    notes = []
    for split, consequence in (("val", "val top-1 is not measured and the method keeps its defaults"),
                               ("test", "test top-1 is not measured")):
        if not data.splits[split]:
            notes.append(f"no {split} images (an image folder holds out val and test only from classes with at "
                         f"least 3 images; a --split file lists them): {consequence}")
    return notes


def _check_label_name(split_file: Path, names: dict[int, str], label: int, name: str, split: str) -> None:
    first = names.setdefault(label, name)
    if first != name:
        raise ClipedgeError(f"--split {split_file}: label {label} is named {first!r} and, in {split}, {name!r}; "
                            "expected one class name per label")


def _check_disjoint(split_file: Path, listed_in: dict[Path, str], path: Path, relpath: str, split: str) -> None:
    first = listed_in.setdefault(path, split)
    if first != split:
        raise ClipedgeError(f"--split {split_file}: {relpath} is in both {first} and {split}; "
                            "expected disjoint train, val and test lists")


def load_labelled_images(root: Path, split_file: Path | None = None, split_seed: int = 0,
                         decoding: DecodeOptions = DecodeOptions()) -> LabelledImages:
    return read_split_file(root, split_file, decoding) if split_file else scan_image_folder(root, split_seed, decoding)


def sample_few_shot(samples: list[Sample], shots: int, seed: int, class_names: list[str] | None = None) -> list[Sample]:
    """Take ``shots`` images per class, seeded and nested: the K-shot set contains every smaller one.

    Only training-split samples are ever passed in, so the result is disjoint
    from val and test by construction.
    """
    if shots < 1:
        raise ClipedgeError(f"--shots {shots}: expected a positive number of images per class")
    by_class: dict[int, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.relpath):
        by_class.setdefault(sample.label, []).append(sample)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        members = by_class[label]
        random.Random(f"shots:{seed}:{label}").shuffle(members)
        if len(members) < shots:
            name = class_names[label] if class_names else str(label)
            log.warning("class %r has %d training images, fewer than --shots %d: using all", name, len(members), shots)
        chosen += members[:shots]
    return chosen
