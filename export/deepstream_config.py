"""What the DeepStream folder's Gst-nvinfer configs say: roles, batch sizes, geometry, threshold, the entries.

Kept apart from the export pipeline (clipedge.export.deepstream) because these are nvinfer's semantics, checked
statically against its documented property table (clipedge.export.nvinfer_config), with nothing to run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.run_dir import Run
from clipedge.runtime.contract import LABELS_FILE, NVINFER_OUTPUT_NAMES, parse_batch

from .metadata import calibration_of
from .nvinfer_config import MAX_BATCH_SIZE, ConfigEntry

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


class GieRole(NamedTuple):
    """What differs between the primary and the secondary config."""

    process_mode: int
    unique_id: int
    #: a primary classifier sees one frame per source; a secondary one many detector crops per frame (16, as in
    #: NVIDIA's deepstream-test2 secondary classifiers)
    default_batch: int


GIE = {"primary": GieRole(1, 1, 1), "secondary": GieRole(2, 2, 16)}
#: the detector a secondary classifier follows: the primary GIE's usual gie-unique-id
DETECTOR_GIE_ID = 1
NETWORK_MODE = {"fp32": 0, "fp16": 2}


def config_file(mode: str) -> str:
    return f"config_infer_{mode}.txt"


@dataclass(frozen=True)
class Geometry:
    """How nvinfer scales a frame or crop to the network size, and what that changes against training."""

    maintain_aspect_ratio: bool
    caveat: str | None = None


def geometry_for(resize_mode: str, image_size: int) -> Geometry:
    """squash → stretch; longest → letterbox with centred black bars; shortest (resize + centre crop) has no
    nvinfer equivalent: letterboxing keeps the shapes undistorted as the crop did, but shows the whole
    frame or crop, smaller, between bars, where training saw its centre square."""
    if resize_mode == "squash":
        return Geometry(False)
    if resize_mode == "longest":
        return Geometry(True)
    return Geometry(True, (
        f"resize_mode 'shortest' (shorter side to {image_size}, centre crop) has no Gst-nvinfer equivalent; "
        "these configs letterbox instead (maintain-aspect-ratio=1, symmetric-padding=1): nvinfer sees the whole "
        "frame or object crop with black bars where training saw its centre square"))


@dataclass(frozen=True)
class Threshold:
    value: float
    note: str
    warning: str | None = None


def threshold_for(run: Run) -> Threshold:
    """classifier-threshold: nvinfer attaches a label only when its probability exceeds it, which is clipedge's
    rejection exactly when the calibrated score is the (temperature-scaled) max probability, as ``probs`` is."""
    calibration = calibration_of(run)
    if calibration.get("threshold") is None:  # not calibrated, or calibrate withheld it (held-out AUROC too low)
        return Threshold(0.0, "no calibrated rejection threshold in the run (clipedge calibrate): every object gets "
                              "its top class")
    score = calibration.get("rejection_score", "max_prob")
    if score == "max_prob":
        return Threshold(strictly_below(float(calibration["threshold"])), f"the run's calibrated rejection threshold "
                         f"{calibration['threshold']:g} on the max probability, as the float32 just below it (nvinfer "
                         "keeps a label above the threshold, clipedge at or above)")
    warning = (f"RUN {run.path}: its rejection threshold {calibration['threshold']:g} is on the energy score "
               "T·logsumexp(logits/T), which nvinfer's classifier-threshold (a probability) cannot express; the "
               "configs set classifier-threshold=0, so nvinfer labels every object with its top class")
    return Threshold(0.0, "the run rejects on energy, which nvinfer cannot compare: not applied, every object gets "
                          "its top class", warning)


def strictly_below(threshold: float) -> float:
    """The value t' with (p > t') == (p >= threshold) for every float32 probability p: nvinfer compares its float32
    softmax output strictly (``probability > m_ClassifierThreshold``, a float), clipedge accepts a score at the
    threshold. 0 where that would be negative: nvinfer refuses a negative classifier-threshold."""
    if threshold <= 0:
        return 0.0
    at_or_above = np.float32(threshold)
    if at_or_above < threshold:
        at_or_above = np.nextafter(at_or_above, np.float32(np.inf))
    return float(np.nextafter(at_or_above, np.float32(-np.inf)))


def config_entries(mode: str, batch: int, precision: str, image_size: int, geometry: Geometry,
                   threshold: Threshold) -> list[ConfigEntry]:
    """The [property] keys of one config, in the order NVIDIA's sample configs use."""
    role = GIE[mode]
    entries = [
        ConfigEntry("gpu-id", 0),
        ConfigEntry("onnx-file", MODEL_FILE),
        ConfigEntry("model-engine-file", f"{MODEL_FILE}_b{batch}_gpu0_{precision}.engine",
                    "nvinfer builds the engine on first run and saves it under this name (batch, GPU, precision)"),
        ConfigEntry("labelfile-path", LABELS_FILE),
        ConfigEntry("batch-size", batch),
        ConfigEntry("network-mode", NETWORK_MODE[precision]),
        ConfigEntry("network-type", 1, "classifier"),
        ConfigEntry("process-mode", role.process_mode,
                    "full frames" if mode == "primary" else "objects from the detector"),
        ConfigEntry("gie-unique-id", role.unique_id),
    ]
    if mode == "secondary":
        entries.append(ConfigEntry("operate-on-gie-id", DETECTOR_GIE_ID, "the primary detector's gie-unique-id"))
    entries += [
        ConfigEntry("model-color-format", 0, "RGB"),
        ConfigEntry("network-input-order", 0, "NCHW"),
        ConfigEntry("infer-dims", [3, image_size, image_size]),
        ConfigEntry("net-scale-factor", 1.0, "pixels stay in 0-255: the model normalises them itself"),
        ConfigEntry("offsets", [0.0, 0.0, 0.0]),
        ConfigEntry("maintain-aspect-ratio", geometry.maintain_aspect_ratio, geometry.caveat or ""),
    ]
    if geometry.maintain_aspect_ratio:
        entries.append(ConfigEntry("symmetric-padding", True, "centred bars, as clipedge pads"))
    entries += [
        ConfigEntry("output-blob-names", list(NVINFER_OUTPUT_NAMES), "softmax probabilities"),
        ConfigEntry("classifier-threshold", threshold.value, threshold.note),
    ]
    return entries


def batch_sizes(batch: str | int | None, modes: tuple[str, ...]) -> dict[str, int]:
    """One nvinfer batch-size per config: --batch N for all, else each mode's default."""
    if batch is None:
        return {mode: GIE[mode].default_batch for mode in modes}
    profile = parse_batch(batch)
    if profile.min != profile.max:
        raise ClipedgeError(f"--batch {batch}: --format deepstream takes one batch size N (nvinfer's batch-size)")
    if profile.max > MAX_BATCH_SIZE:
        raise ClipedgeError(f"--batch {batch}: nvinfer accepts at most {MAX_BATCH_SIZE}")
    return {mode: profile.max for mode in modes}
