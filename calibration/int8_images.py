"""The images INT8 quantization learns its ranges from, and the images that judge the result.

- *calibration*: activation ranges are collected on these (the run's train
  and val images, or ``--calib DIR``), a seeded sample of ``count``;
- *selection*: a seeded quarter of the same pool, held back from calibration,
  on which the calibration methods are compared and each layer's sensitivity
  is measured (:mod:`.int8_sensitivity`);
- *gate*: every image calibration did not see, the run's train, val and test
  images and the rest of ``--calib`` alike (agreement with fp32 needs no
  labels), on which the exported model must agree with fp32
  (:mod:`.int8_gate`). The selection images are part of it: they steered the
  method and the float layers, never the ranges; the images that nothing but
  the gate saw are counted apart (``untouched``) so that figure can be read on
  its own.

Frames are prepared by the runtime's own preprocessing, so quantization sees
exactly the uint8 frames a deployed model will.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.run_dir import Run, record_skipped
from clipedge.run_features import run_data, run_decoding
from clipedge.runtime.preprocessing.image_files import collect_images
from clipedge.runtime.preprocessing.transform import prepare_files

from .int8_options import DEFAULT_COUNT

log = logging.getLogger(__name__)

MAX_SELECTION = 64
#: enough for the 98 % gate's 95 % interval to be under ±1 %, without holding a large set in memory
GATE_IMAGES = 1000


@dataclass
class CalibrationImages:
    """uint8 [N, S, S, 3] frames for calibration and for choosing the method, and where they came from."""

    calibration: np.ndarray
    selection: np.ndarray
    source: str
    skipped: int = 0
    #: every image calibration did not see (a seeded sample of GATE_IMAGES for large sets), for the gate
    gate_paths: list[Path] = field(default_factory=list)
    #: how many of ``gate_paths`` the selection did not see either
    untouched: int = 0

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "calibration_images": len(self.calibration),
                "selection_images": len(self.selection), "gate_images": len(self.gate_paths),
                "untouched_gate_images": self.untouched, "skipped_files": self.skipped}


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix); a one-line error when there are none."""
    if not folder.is_dir():
        raise ClipedgeError(f"--calib {folder}: no such folder")
    paths, _ = collect_images([folder], option="--calib")
    if not paths:
        raise ClipedgeError(f"--calib {folder}: no image files in this folder (expected .jpg, .png, ... files, "
                            "ideally frames like the ones the model will see)")
    return paths


def run_pool(run: Run) -> list[Path]:
    """The run's train and val images: what the model was fitted on, so what it is meant to see."""
    splits = run_data(run).splits
    paths = [s.path for name in ("train", "val") for s in splits[name]]
    if not paths:
        raise ClipedgeError(f"RUN {run.path}: no train or val images to calibrate INT8 on; pass --calib DIR "
                            "with a few hundred representative images")
    return paths


def load_frames(run: Run, paths: list[Path], from_run: bool) -> tuple[np.ndarray, int]:
    """Frames at the model's size (runtime preprocessing, decoded as the run was); unreadable files are skipped
    and counted, and recorded in the run's skipped.json when they are the run's own."""
    spec = run.backbone_spec
    frames, unreadable = prepare_files(paths, spec.image_size, spec.interpolation, spec.resize_mode,
                                       decoding=run_decoding(run))
    if unreadable:
        log.warning("skipped %d unreadable calibration image(s), e.g. %s (%s)", len(unreadable),
                    unreadable[0].path, unreadable[0].reason)
        if from_run:
            record_skipped(run.path, unreadable, "int8")
    return frames, len(unreadable)


def calibration_images(run: Run, calib_dir: str | Path | None = None, count: int = DEFAULT_COUNT,
                       seed: int = 0) -> CalibrationImages:
    """A seeded calibration sample of ``count`` images, a disjoint selection set from the same pool, and the
    gate's images: everything calibration did not see."""
    pool = folder_images(Path(calib_dir)) if calib_dir else run_pool(run)
    source = str(Path(calib_dir).resolve()) if calib_dir else f"{run.path} train+val images"
    random.Random(f"int8-calibration:{seed}").shuffle(pool)
    selection_size = min(MAX_SELECTION, len(pool) // 4)
    selection_paths, calibration_paths = pool[:selection_size], pool[selection_size:][:count]
    calibration, skipped = load_frames(run, calibration_paths, from_run=not calib_dir)
    selection, skipped_selection = load_frames(run, selection_paths, from_run=not calib_dir)
    if not len(calibration):
        where = f"--calib {calib_dir}" if calib_dir else f"RUN {run.path}"
        raise ClipedgeError(f"{where}: none of the {len(calibration_paths)} calibration images could be read")
    if not len(selection):  # a pool of 1-3 images: choose on the calibration frames themselves
        log.warning("only %d calibration image(s): the calibration method is chosen on the calibration images "
                    "themselves; pass --calib DIR with a few hundred images for a held-out choice", len(calibration))
        selection = calibration
    gate = gate_images(run, pool, calibration_paths, seed=seed)
    selected = {path.resolve() for path in selection_paths}
    untouched = sum(path.resolve() not in selected for path in gate)
    return CalibrationImages(calibration, selection, source, skipped + skipped_selection, gate, untouched)


def gate_images(run: Run, pool: list[Path], calibration_paths: list[Path], limit: int = GATE_IMAGES,
                seed: int = 0) -> list[Path]:
    """Every image of the run and of the calibration pool that calibration did not see, once each (a seeded
    sample of ``limit`` for large sets)."""
    seen = {path.resolve() for path in calibration_paths}
    candidates = [s.path for split in ("train", "val", "test") for s in run_data(run).splits[split]] + pool
    unseen = {path.resolve(): path for path in reversed(candidates) if path.resolve() not in seen}
    paths = sorted(unseen.values())
    if not paths:
        raise ClipedgeError(f"RUN {run.path}: every image calibrated INT8, none is left to check the INT8 model "
                            "against; pass a smaller --calib-count or --calib DIR with more images")
    if len(paths) > limit:
        paths = sorted(random.Random(f"int8-gate:{seed}").sample(paths, limit))
    return paths
