"""The exported model's contract, owned by the runtime and written by the export (docs/design.md §5.2).

One module per concept: ``names`` (tensors, metadata keys, files beside a model), ``metadata`` (the
:class:`ModelContract` and its one parser), ``model_file`` (reading a model file's metadata), ``frame_input``
(a ``--frame`` model's camera frame), ``sidecar`` (an engine's JSON sidecar), ``batch_profile`` (the batch
range and how calls are fitted to it), ``reference_set`` (the frames an engine is gated on) and
``plain_models`` (models that are not clipedge exports). Nothing here imports torch, onnx or the export side.
The names below are the contract's public surface, imported from this package.
"""

from .batch_profile import BatchProfile, parse_batch, recorded_batch_profile, run_in_batches
from .frame_input import (
    COLOUR_MATRICES,
    PIXEL_FORMATS,
    FrameInput,
    default_colour_matrix,
    frame_input_of,
    frame_input_spec,
    parse_frame,
)
from .metadata import (
    RESIZE_MODES,
    ModelContract,
    decode_metadata,
    encode_metadata,
    exif_transpose_of,
    max_image_pixels_of,
    missing_contract_keys,
    not_an_export,
    read_contract,
)
from .model_file import model_metadata_of
from .names import (
    BATCH_PROFILE_KEY,
    DEFAULT_BATCH_PROFILE,
    EXIF_TRANSPOSE_KEY,
    INPUT_NAME,
    LABELS_FILE,
    MAX_IMAGE_PIXELS_KEY,
    NVINFER_INPUT_NAME,
    NVINFER_OUTPUT_NAMES,
    OUTPUT_NAMES,
    REFERENCE_KEY,
    REQUIRED_KEYS,
    SIDECAR_SUFFIX,
    output_names,
)
from .plain_models import class_scores, read_labels, score_output
from .reference_set import ReferenceSet, read_reference_set
from .sidecar import check_sidecar_matches, engine_fingerprint, foreign_engine_metadata, read_sidecar, sidecar_path

__all__ = [
    "BATCH_PROFILE_KEY",
    "COLOUR_MATRICES",
    "DEFAULT_BATCH_PROFILE",
    "EXIF_TRANSPOSE_KEY",
    "INPUT_NAME",
    "LABELS_FILE",
    "MAX_IMAGE_PIXELS_KEY",
    "NVINFER_INPUT_NAME",
    "NVINFER_OUTPUT_NAMES",
    "OUTPUT_NAMES",
    "PIXEL_FORMATS",
    "REFERENCE_KEY",
    "REQUIRED_KEYS",
    "RESIZE_MODES",
    "SIDECAR_SUFFIX",
    "BatchProfile",
    "FrameInput",
    "ModelContract",
    "ReferenceSet",
    "check_sidecar_matches",
    "class_scores",
    "decode_metadata",
    "default_colour_matrix",
    "encode_metadata",
    "engine_fingerprint",
    "exif_transpose_of",
    "foreign_engine_metadata",
    "frame_input_of",
    "frame_input_spec",
    "max_image_pixels_of",
    "missing_contract_keys",
    "model_metadata_of",
    "not_an_export",
    "output_names",
    "parse_batch",
    "parse_frame",
    "read_contract",
    "read_labels",
    "read_reference_set",
    "read_sidecar",
    "recorded_batch_profile",
    "run_in_batches",
    "score_output",
    "sidecar_path",
]
