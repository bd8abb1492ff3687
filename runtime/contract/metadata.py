"""A clipedge export's metadata and the one parser that turns it into a :class:`ModelContract`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.rejection import REJECTION_SCORES

from .frame_input import FrameInput, frame_input_of
from .names import EXIF_TRANSPOSE_KEY, MAX_IMAGE_PIXELS_KEY, REQUIRED_KEYS

RESIZE_MODES = ("shortest", "squash", "longest")


@dataclass(frozen=True)
class ModelContract:
    """What a clipedge export promises about itself, parsed from its string metadata."""

    class_names: tuple[str, ...]
    image_size: int
    precision: str
    fixed_batch: int | None
    outputs: tuple[str, ...]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    temperature: float = 1.0
    rejection_threshold: float | None = None
    rejection_score: str = "max_prob"
    frame: FrameInput | None = None
    exif_transpose: bool = False


def exif_transpose_of(metadata: dict[str, str]) -> bool:
    """Whether a model's image files get their EXIF orientation applied (see EXIF_TRANSPOSE_KEY)."""
    return metadata.get(EXIF_TRANSPOSE_KEY, "false").strip().lower() == "true"


def max_image_pixels_of(metadata: dict[str, str]) -> int | None:
    """The pixel limit the model's training decoded files with (MAX_IMAGE_PIXELS_KEY), None where not recorded."""
    value = metadata.get(MAX_IMAGE_PIXELS_KEY, "").strip()
    return int(value) if value.isdigit() else None


def missing_contract_keys(metadata: dict[str, str]) -> list[str]:
    """The required contract keys a model's metadata lacks (all of them for a non-clipedge model)."""
    return [key for key in REQUIRED_KEYS if key not in metadata]


def not_an_export(source: str | Path, missing: list[str]) -> str:
    """The one line for a model whose metadata lacks contract keys, with how to run it anyway."""
    return (f"model {source}: not a clipedge export (metadata lacks {', '.join(missing)}); to run it as a plain "
            f"classifier of uint8 [N, S, S, 3] RGB frames, give its labels (Classifier(path, labels=...) or --labels FILE)")


def read_contract(metadata: dict[str, str], source: str | Path) -> ModelContract:
    """Parse and check a clipedge model's metadata; one-line errors name ``source`` and the bad field."""
    missing = missing_contract_keys(metadata)
    if missing:
        raise ClipedgeError(not_an_export(source, missing))
    try:
        names = tuple(str(name) for name in json.loads(metadata["class_names"]))
        spec = json.loads(metadata["input"])
        batch = spec.get("shape", [None])[0]
        contract = ModelContract(
            class_names=names, image_size=int(metadata["image_size"]), precision=metadata["precision"],
            fixed_batch=batch if isinstance(batch, int) else None, outputs=tuple(json.loads(metadata["outputs"])),
            interpolation=metadata.get("interpolation", "bicubic"), resize_mode=metadata.get("resize_mode", "shortest"),
            temperature=float(metadata.get("temperature", 1.0)),
            rejection_threshold=float(metadata["rejection_threshold"]) if "rejection_threshold" in metadata else None,
            rejection_score=metadata.get("rejection_score", "max_prob"), frame=frame_input_of(metadata),
            exif_transpose=exif_transpose_of(metadata),
        )
    except (ValueError, TypeError, AttributeError, IndexError) as error:
        raise ClipedgeError(f"model {source}: malformed clipedge metadata ({error})") from None
    if contract.resize_mode not in RESIZE_MODES:
        raise ClipedgeError(f"model {source}: resize_mode {contract.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if contract.rejection_score not in REJECTION_SCORES:
        raise ClipedgeError(f"model {source}: rejection_score {contract.rejection_score!r} is not one of "
                            f"{', '.join(REJECTION_SCORES)}")
    return contract


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as ONNX stores it: strings as they are, everything else as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


def decode_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """The inverse of :func:`encode_metadata`: JSON values decoded, plain strings kept (what the schema describes)."""
    decoded: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded
