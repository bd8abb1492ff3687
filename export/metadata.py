"""What travels with an exported model: ONNX ``metadata_props`` and the engine's JSON sidecar.

The runtime needs nothing but the artifact (docs/design.md §5.2), so everything it
must know to feed the model and label its output lives here: class names,
the input contract, the resize the training pipeline used, the calibrated
temperature and rejection threshold, and where and how the model was made.
ONNX metadata is string → string; structured values are stored as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipedge.core.images import DecodeOptions
from clipedge.runtime.contract import (
    EXIF_TRANSPOSE_KEY,
    INPUT_NAME,
    MAX_IMAGE_PIXELS_KEY,
    FrameInput,
    encode_metadata,
    frame_input_spec,
    output_names,
)
from clipedge.runtime.schemas import SCHEMA_VERSIONS
from clipedge.version import __version__

if TYPE_CHECKING:  # importing clipedge.run_dir would import torch; this module stays torch-free for the runtime
    from clipedge.run_dir import Run

def calibration_of(run: Run) -> dict[str, Any]:
    """The manifest's ``calibration`` entry (written by ``clipedge calibrate``), or {}."""
    return run.manifest.get("calibration") or {}


def model_metadata(run: Run, precision: str, embeddings: bool, fixed_batch: int | None, opset: int,
                   frame: FrameInput | None = None) -> dict[str, Any]:
    spec, decoding = run.backbone_spec, DecodeOptions.from_manifest(run.manifest)
    metadata: dict[str, Any] = {
        "schema_version": SCHEMA_VERSIONS["onnx_metadata"],
        "class_names": run.class_names,
        "image_size": str(spec.image_size),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                  "shape": [fixed_batch or "N", spec.image_size, spec.image_size, 3]}
        if frame is None else frame_input_spec(frame, fixed_batch),
        "outputs": output_names(embeddings),
        "interpolation": spec.interpolation,
        "resize_mode": spec.resize_mode,
        EXIF_TRANSPOSE_KEY: decoding.exif_transpose,
        "backbone": spec.name,
        "pretrained": spec.pretrained,
        "method": run.method,
        "source_run": str(run.path.resolve()),
        "clipedge_version": __version__,
        "precision": precision,
        "opset": str(opset),
    }
    if decoding.pixel_limit is not None:
        metadata[MAX_IMAGE_PIXELS_KEY] = decoding.pixel_limit
    calibration = calibration_of(run)
    if "temperature" in calibration:
        metadata["temperature"] = str(calibration["temperature"])
    if calibration.get("threshold") is not None:  # null: calibrate withheld it (its held-out AUROC was too low)
        metadata["rejection_threshold"] = str(calibration["threshold"])
        metadata["rejection_score"] = calibration.get("rejection_score", "max_prob")
    return metadata


def set_onnx_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Replace ``model.metadata_props`` (an ``onnx.ModelProto``) with ``metadata`` (clipedge.runtime.contract reads it)."""
    del model.metadata_props[:]
    for key, value in encode_metadata(metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
