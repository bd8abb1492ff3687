"""``clipedge predict`` over folders of any size: files walked lazily, results written as each batch finishes.

Memory stays flat in the number of files: the walk holds one directory listing
at a time, each batch of predictions is written and flushed before the next is
decoded, and only skipped files (for the summary) are remembered. What is
written is therefore usable while the run goes on and after it is stopped:

* ``--csv``: a header, then one complete row per image.
* ``--json``: one JSON object, ``{"model", "backend", "predictions": [...], "skipped", "skipped_files",
  "interrupted"}``, each prediction on its own line. It is valid JSON when the run completes and when it is
  interrupted (Ctrl-C or SIGTERM close the array and set ``"interrupted": true``); after a hard kill the
  lines written so far are still whole predictions.
* the default table: fixed column widths measured before the first row, so rows need not be held back.

Files are visited in the one order of :mod:`clipedge.runtime.preprocessing.image_files`. ``--boxes`` results
(regions of images) go through the same writers.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import SkippedFile, UnreadableImage
from clipedge.core.tables import format_cell, format_row
from clipedge.runtime.classifier import UNKNOWN, Classifier, Prediction
from clipedge.runtime.preprocessing.boxes import Region
from clipedge.runtime.preprocessing.image_files import walk_files
from clipedge.runtime.schemas import SCHEMA_VERSIONS


@dataclass
class Scan:
    """A first, cheap pass over the inputs: how many candidates (the progress bar's total) and the widest path."""

    candidates: int = 0
    widest_path: int = 0


def scan(inputs: Iterable[Path]) -> Scan:
    found = Scan()
    for path, candidate in walk_files(inputs):
        if candidate:
            found.candidates += 1
            found.widest_path = max(found.widest_path, len(str(path)))
    return found


def not_an_image(path: Path) -> SkippedFile:
    """A file in a folder whose suffix no image decoder claims: listed, never opened."""
    return SkippedFile(path, "not-an-image", "no image file suffix")


@dataclass
class Outcome:
    """What a streamed run did: images classified, files skipped (not images, or unreadable), whether it was stopped."""

    classified: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    interrupted: bool = False


def classify_batches(classifier: Classifier, files: Iterable[tuple[Path, bool]], top_k: int,
                     outcome: Outcome, progress: tqdm) -> Iterator[list[tuple[Path, Prediction]]]:
    """Predictions ``classifier.batch_size`` files at a time; unreadable and non-image files go to ``outcome``."""
    frames: list[np.ndarray] = []
    kept: list[Path] = []

    def flush() -> list[tuple[Path, Prediction]]:
        results = list(zip(kept, classifier.predict(np.stack(frames), top_k=top_k)))
        frames.clear()
        kept.clear()
        return results

    for path, candidate in files:
        if not candidate:
            outcome.skipped.append(not_an_image(path))
            continue
        try:
            frames.append(classifier.prepare(path)[0][0])  # the model's own resize (or its --frame input)
            kept.append(path)
        except UnreadableImage as error:
            outcome.skipped.append(error.skipped)
        except ClipedgeError as error:  # decodes, but not as this model takes it (a --frame model's size or format)
            outcome.skipped.append(SkippedFile(path, "unsuitable", str(error)))
        progress.update()
        if len(frames) == classifier.batch_size:
            yield flush()
    if frames:
        yield flush()


class Writer(ABC):
    """Writes predictions to ``out`` batch by batch, flushed; nothing is written before the first prediction."""

    def __init__(self, out: TextIO, classifier: Classifier, model: Path, top_k: int, widest_path: int):
        self.out, self.classifier, self.model, self.top_k, self.widest_path = out, classifier, model, top_k, widest_path
        self.started = False

    def write(self, results: list[tuple[Path, Prediction]]) -> None:
        text = self.format(results, first=not self.started)
        self.started = True
        self.out.write(text)
        self.out.flush()

    @abstractmethod
    def format(self, results: list[tuple[Path, Prediction]], first: bool) -> str:
        """The text for one batch; ``first`` adds what opens the output (a header)."""

    def close(self, outcome: Outcome) -> None:
        """Finish the output (only JSON has anything left to write)."""


class CsvWriter(Writer):
    def format(self, results: list[tuple[Path, Prediction]], first: bool) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if first:
            extra = [f"{kind}_{rank}" for rank in range(2, self.top_k + 1) for kind in ("label", "score")]
            writer.writerow(["path", "label", "score", *extra])
        for path, p in results:
            others = [v for i in range(1, len(p.labels)) for v in (p.labels[i], f"{p.scores[i]:.6f}")]
            writer.writerow([str(path), p.label, f"{p.score:.6f}", *others])
        return buffer.getvalue()


def source_of(item: Path | Region) -> dict:
    """A prediction's source in JSON: the file, and the box for a region."""
    return {"path": str(item.path), "box": list(item.box)} if isinstance(item, Region) else {"path": str(item)}


class JsonWriter(Writer):
    def format(self, results: list[tuple[Path, Prediction]], first: bool) -> str:
        records = ",\n".join(json.dumps({**source_of(path), **p.to_dict()}) for path, p in results)
        if not first:
            return ",\n" + records
        return (f'{{"schema_version": {SCHEMA_VERSIONS["predict"]}, "model": {json.dumps(str(self.model))}, '
                f'"backend": {json.dumps(self.classifier.backend_name)}, '
                f'"predictions": [\n{records}')

    def close(self, outcome: Outcome) -> None:
        """Closes the document; with no image classified it is still written (no predictions, every skipped file
        with its reason), because a program reading it needs those reasons most of all."""
        if not self.started:
            self.write([])
        skipped = json.dumps([file.to_dict() for file in outcome.skipped])
        self.out.write(f'\n], "skipped": {len(outcome.skipped)}, "skipped_files": {skipped}, '
                       f'"interrupted": {json.dumps(outcome.interrupted)}}}\n')
        self.out.flush()


class TableWriter(Writer):
    def format(self, results: list[tuple[Path, Prediction]], first: bool) -> str:
        ranked = self.top_k > 1
        headers = ["image", "label", "score", *(["top-k"] if ranked else [])]
        label_width = max(len(UNKNOWN), *(len(label) for label in self.classifier.labels))
        widths = [self.widest_path, label_width, len("0.0001"), *([0] if ranked else [])]
        widths = [max(w, len(h)) for w, h in zip(widths, headers)]
        numeric = [False, False, True, False]
        lines = [headers, ["-" * w for w in widths]] if first else []
        for path, p in results:
            others = ", ".join(f"{label} {score:.3f}" for label, score in zip(p.labels, p.scores))
            lines.append([str(path), p.label, format_cell(round(p.score, 4)), *([others] if ranked else [])])
        return "".join(format_row(line, widths, numeric) + "\n" for line in lines)


WRITERS = {"table": TableWriter, "csv": CsvWriter, "json": JsonWriter}


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so the output is closed as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def stream_predictions(classifier: Classifier, inputs: list[Path], out: TextIO, model: Path, fmt: str = "table",
                       top_k: int = 1, progress: bool = True) -> Outcome:
    """Classify every image under ``inputs`` and write each batch's results to ``out`` as soon as it is done.

    Ctrl-C (and SIGTERM, when called from the main thread) stops the run cleanly: the output written so far is
    completed (see the module docstring) and the returned outcome says ``interrupted``.
    """
    if fmt not in WRITERS:
        raise ClipedgeError(f"format {fmt!r}: expected one of {', '.join(WRITERS)}")
    found = scan(inputs)
    writer = WRITERS[fmt](out, classifier, model, top_k, found.widest_path)
    outcome = Outcome()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        with tqdm(total=found.candidates, unit="image", disable=None if progress else True, leave=False) as bar:
            for results in classify_batches(classifier, walk_files(inputs), top_k, outcome, bar):
                with tqdm.external_write_mode(out):  # rows and the bar share a terminal: clear, write, redraw
                    writer.write(results)
                outcome.classified += len(results)
    except (KeyboardInterrupt, _Terminated):
        outcome.interrupted = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    writer.close(outcome)
    return outcome



def write_all(results: list[tuple[Path | Region, Prediction]], skipped: list[SkippedFile], out: TextIO,
              classifier: Classifier, model: Path, fmt: str = "table", top_k: int = 1) -> None:
    """Results computed all at once (``--boxes``) through the same writers as the streamed ones."""
    writer = WRITERS[fmt](out, classifier, model, top_k, max((len(str(item)) for item, _ in results), default=0))
    writer.write(results)
    writer.close(Outcome(classified=len(results), skipped=skipped))
