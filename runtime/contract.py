"""The exported model's contract (DESIGN.md §4), written once, torch-free, owned by the runtime.

Everything both sides of an export must agree on lives here: tensor names,
the metadata keys and their one reader, the engine sidecar, the batch
profile, onnxruntime's TensorRT provider options, how a batch is padded and
split to fit a model, and the rejection score. ``clipedge.export`` writes
what this module reads; nothing here imports torch, onnx or the export side,
so a camera box with numpy and one inference backend can use all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from clipedge.errors import ClipedgeError

from .onnx_metadata import read_onnx_metadata

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs", "embeddings")
RESIZE_MODES = ("shortest", "squash", "longest")
REJECTION_SCORES = ("max_prob", "energy")
#: metadata keys without which a model cannot be fed and labelled as clipedge exports are
REQUIRED_KEYS = ("class_names", "image_size", "input", "outputs", "precision")
SIDECAR_SUFFIX = ".json"
#: metadata key: whether image files are turned upright by their EXIF orientation before preprocessing, as the
#: run's training did ("true"/"false"; absent in models exported before clipedge applied it, which did not)
EXIF_TRANSPOSE_KEY = "exif_transpose"


def output_names(embeddings: bool) -> list[str]:
    """The outputs an export declares, in order: logits, probs[, embeddings]."""
    return list(OUTPUT_NAMES[: 3 if embeddings else 2])


# --- metadata -------------------------------------------------------------------------------------------------


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
    exif_transpose: bool = False


def exif_transpose_of(metadata: dict[str, str]) -> bool:
    """Whether a model's image files get their EXIF orientation applied (see EXIF_TRANSPOSE_KEY)."""
    return metadata.get(EXIF_TRANSPOSE_KEY, "false").strip().lower() == "true"


def missing_contract_keys(metadata: dict[str, str]) -> list[str]:
    """The required contract keys a model's metadata lacks (all of them for a non-clipedge model)."""
    return [key for key in REQUIRED_KEYS if key not in metadata]


def read_contract(metadata: dict[str, str], source: str | Path) -> ModelContract:
    """Parse and check a clipedge model's metadata; one-line errors name ``source`` and the bad field."""
    missing = missing_contract_keys(metadata)
    if missing:
        raise ClipedgeError(f"model {source}: not a clipedge export (metadata lacks {', '.join(missing)})")
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
            rejection_score=metadata.get("rejection_score", "max_prob"),
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


def model_metadata_of(path: Path) -> dict[str, str]:
    """The string metadata of an ONNX model (``metadata_props``) or an engine (its sidecar)."""
    if path.suffix.lower() == ".onnx":
        metadata = read_onnx_metadata(path)
        if metadata is None:
            raise ClipedgeError(f"model {path}: not a valid ONNX model (truncated or another format)")
        return metadata
    return encode_metadata(read_sidecar(path))


# --- engine sidecar ---------------------------------------------------------------------------------------------


def sidecar_path(engine: Path) -> Path:
    """``model.engine`` → ``model.engine.json``: the build facts and contract of an engine."""
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The JSON sidecar beside an engine."""
    sidecar = sidecar_path(engine)
    try:
        facts = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise ClipedgeError(f"model {engine}: missing {sidecar.name}, the sidecar `clipedge export --format engine` writes") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"model {sidecar}: not a valid JSON sidecar ({error})") from None
    if not isinstance(facts, dict):
        raise ClipedgeError(f"model {sidecar}: expected a JSON object")
    return facts


# --- batch profile ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes a model accepts: an engine's optimisation profile MIN ≤ OPT ≤ MAX."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min},{self.opt},{self.max}"


def parse_batch(text: str | int, option: str = "--batch") -> BatchProfile:
    """``N`` (all three equal) or ``MIN,OPT,MAX`` with 1 ≤ MIN ≤ OPT ≤ MAX."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ClipedgeError(f"{option} {text}: expected N or MIN,OPT,MAX as whole numbers, e.g. 1,8,32") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ClipedgeError(f"{option} {text}: expected N or MIN,OPT,MAX (three numbers), got {len(values)}")
    low, opt, high = values
    if low < 1:
        raise ClipedgeError(f"{option} {text}: batch sizes must be at least 1")
    if not low <= opt <= high:
        raise ClipedgeError(f"{option} {text}: expected MIN <= OPT <= MAX")
    return BatchProfile(low, opt, high)


def run_in_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], frames: np.ndarray, max_batch: int | None,
                   min_batch: int = 1) -> dict[str, np.ndarray]:
    """``run`` over all frames in chunks a model accepts: split above ``max_batch``, pad a short chunk up to
    ``min_batch`` with copies of its last frame (a fixed-batch model or an engine profile's minimum), then
    drop the padding's outputs."""
    step = max_batch or len(frames)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(frames), step):
        chunk = frames[start : start + step]
        count = len(chunk)
        if count < min_batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], min_batch - count, axis=0)])
        parts.append({name: value[:count] for name, value in run(np.ascontiguousarray(chunk)).items()})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


# --- onnxruntime ------------------------------------------------------------------------------------------------

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
TENSORRT_WORKSPACE_BYTES = 4 << 30
TENSORRT_OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on transformer encoders


def tensorrt_provider_options(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                              fp16_anywhere: bool = False) -> dict[str, str]:
    """Options for onnxruntime's TensorRT execution provider: one profile over the model's batch range, engine
    and timing caches in ``cache_dir``.

    The profile must come from the model's batch range, never from the caller's batch size: a shape outside
    the cached profile makes onnxruntime rebuild the engine (microsoft/onnxruntime#16889). With
    ``fp16_anywhere`` off, onnxruntime builds a strongly typed TensorRT network (it does whenever neither
    fp16 nor int8 is enabled), which keeps the fp16 export's fp32 head and softmax, and an INT8 model's Q/DQ
    placement, exactly as the export gate checked them.
    """
    cache = str(Path(cache_dir))

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x{image_size}x{image_size}x3"

    return {
        "trt_fp16_enable": str(fp16_anywhere),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_max_workspace_size": str(TENSORRT_WORKSPACE_BYTES),
        "trt_builder_optimization_level": str(TENSORRT_OPTIMIZATION_LEVEL),
        "trt_profile_min_shapes": shape(profile.min),
        "trt_profile_opt_shapes": shape(profile.opt),
        "trt_profile_max_shapes": shape(profile.max),
    }


def tensorrt_providers(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                       fp16_anywhere: bool = False) -> list:
    """``providers=`` for ``onnxruntime.InferenceSession``: TensorRT first, CUDA and CPU for what it leaves."""
    options = tensorrt_provider_options(cache_dir, image_size, profile, fp16_anywhere)
    return [(TENSORRT_PROVIDER, options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def cpu_graph_optimization(precision: str | None) -> str:
    """The onnxruntime graph optimisation level for a model on the CPU provider, by its precision.

    onnxruntime 1.32's CPU layout optimisations (level ALL) crash the process (a segfault, not an exception)
    on fp16 transformer graphs; the basic and extended fusions run them correctly. Returned as the name of
    an ``onnxruntime.GraphOptimizationLevel`` member so this module needs no onnxruntime import.
    """
    return "ORT_ENABLE_EXTENDED" if precision == "fp16" else "ORT_ENABLE_ALL"


# --- rejection --------------------------------------------------------------------------------------------------


def confidence(logits: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """The score the calibrated rejection threshold applies to, higher = more confident: the maximum softmax
    probability of ``logits / T``, or the negative energy ``T·logsumexp(logits / T)`` (Liu et al., 2020).
    Computed in float64 so a threshold set in training matches the runtime's decision bit for bit in practice."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1)
    log_sum = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    if kind == "max_prob":
        return np.exp(top - log_sum)
    if kind == "energy":
        return temperature * log_sum
    raise ClipedgeError(f"rejection score {kind!r}: expected one of {', '.join(REJECTION_SCORES)}")
