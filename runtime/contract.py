"""The exported model's contract (DESIGN.md §4), written once, torch-free, owned by the runtime.

Everything both sides of an export must agree on lives here: tensor names,
the metadata keys and their one reader, the camera-frame input of a
``--frame`` export, the engine sidecar, the batch profile, onnxruntime's TensorRT provider options, how a batch is padded and
split to fit a model, and the rejection score. ``clipedge.export`` writes
what this module reads; nothing here imports torch, onnx or the export side,
so a camera box with numpy and one inference backend can use all of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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
#: The DeepStream variant (``clipedge export --format deepstream``): Gst-nvinfer feeds a float32 NCHW tensor it
#: computed as net-scale-factor · (pixel − offset), and reads softmax outputs, so the variant takes float RGB
#: planes in 0–255 (scale 1, offsets 0) with the normalisation kept in the graph, and has ``probs`` only.
NVINFER_INPUT_NAME = "pixels"
NVINFER_OUTPUT_NAMES = ("probs",)
PIXEL_FORMATS = ("rgb", "bgr", "nv12")
#: YCbCr → RGB matrices an NV12 front end implements, both limited range (Y 16-235, CbCr 16-240)
COLOUR_MATRICES = ("bt601", "bt709")
#: metadata key of the batch range an export was made for ("MIN,OPT,MAX"): engine profiles and ORT's TensorRT EP
BATCH_PROFILE_KEY = "batch_profile"
DEFAULT_BATCH_PROFILE = "1,8,32"
#: metadata key of the frames and fp32 PyTorch probabilities an engine built from the ONNX must reproduce
REFERENCE_KEY = "reference_set"
#: class names, one per line, beside an engine built by another tool (trtexec, Polygraphy)
LABELS_FILE = "labels.txt"
#: metadata key: whether image files are turned upright by their EXIF orientation before preprocessing, as the
#: run's training did ("true"/"false"; absent in models exported before clipedge applied it, which did not)
EXIF_TRANSPOSE_KEY = "exif_transpose"
#: metadata key: the declared-pixel limit above which the run's training skipped files (``--max-image-pixels``);
#: the runtime applies the same limit to files, so a photo training accepted is accepted at run time
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"


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


# --- models that are not clipedge exports -----------------------------------------------------------------------


def read_labels(labels: Sequence[str] | str | Path) -> list[str]:
    """Class names the caller gives for a model without clipedge metadata: a list, or a text file with one
    name per line (blank lines ignored), the layout of most published ``labels.txt`` files."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ClipedgeError(f"--labels {path}: cannot read it as a UTF-8 text file ({type(error).__name__})") from None
        source = f"--labels {path}"
    else:
        names, source = [str(name) for name in labels], "labels"
    if not names:
        raise ClipedgeError(f"{source}: no class names (expected one per line)")
    return names


def score_output(names: Sequence[str]) -> str | None:
    """The output that carries class scores: the contract's ``probs`` or ``logits``, else a plain classifier's
    only output (taken as logits); None when a model has several outputs and none of those names."""
    for name in ("probs", "logits"):
        if name in names:
            return name
    return names[0] if len(names) == 1 else None


def class_scores(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` with both ``logits`` and ``probs``, as a clipedge export has them. For a plain classifier,
    probs is the softmax of its one output (or of ``logits``); a probs-only model gets log-probabilities as
    logits, whose softmax is those probabilities again."""
    if "logits" in outputs and "probs" in outputs:
        return outputs
    if "probs" in outputs:
        return {**outputs, "logits": np.log(np.maximum(outputs["probs"], np.finfo(np.float32).tiny))}
    name = score_output(list(outputs))
    if name is None:
        raise ClipedgeError(f"model outputs {', '.join(outputs)}: expected logits/probs or a single [N, C] output")
    logits = np.asarray(outputs[name], dtype=np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {**outputs, "logits": logits, "probs": shifted / shifted.sum(axis=1, keepdims=True)}


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


def model_metadata_of(path: Path) -> dict[str, str]:
    """The string metadata of an ONNX model (``metadata_props``) or an engine (its sidecar)."""
    if path.suffix.lower() == ".onnx":
        metadata = read_onnx_metadata(path)
        if metadata is None:
            raise ClipedgeError(f"model {path}: not a valid ONNX model (truncated or another format)")
        return metadata
    if sidecar_path(path).is_file():
        return encode_metadata(read_sidecar(path))
    return foreign_engine_metadata(path)


# --- camera-frame input (``clipedge export --frame WxH``) ----------------------------------------------------------


@dataclass(frozen=True)
class FrameInput:
    """The raw camera frame a ``--frame`` export takes instead of model-size RGB images.

    rgb/bgr: ``uint8 [N, height, width, 3]``; nv12: one ``uint8 [N, height * 3/2, width]`` plane (the Y rows,
    then the interleaved half-resolution U, V rows), what GStreamer and Jetson cameras deliver.
    ``colour_matrix`` (nv12 only) names the limited-range YCbCr matrix the graph converts with.
    """

    width: int
    height: int
    pixel_format: str = "rgb"
    colour_matrix: str | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One frame's shape, without the batch dimension."""
        if self.pixel_format == "nv12":
            return (self.height * 3 // 2, self.width)
        return (self.height, self.width, 3)

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.pixel_format}"

    def to_dict(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"width": self.width, "height": self.height, "pixel_format": self.pixel_format}
        if self.colour_matrix:
            facts["colour_matrix"] = self.colour_matrix
        return facts


def default_colour_matrix(height: int) -> str:
    """GStreamer's default for YUV video whose caps name no colorimetry: BT.709 above 576 lines, BT.601 up to
    576 (gst-libs/gst/video/video-info.c, ``set_default_colorimetry``); both limited range."""
    return "bt709" if height > 576 else "bt601"


def parse_frame(text: str, pixel_format: str = "rgb", colour_matrix: str | None = None,
                option: str = "--frame") -> FrameInput:
    """``WIDTHxHEIGHT`` (e.g. 1920x1080) and a pixel format → a checked FrameInput; one-line errors."""
    parts = str(text).lower().split("x")
    try:
        width, height = (int(part) for part in parts)
    except ValueError:
        raise ClipedgeError(f"{option} {text}: expected WIDTHxHEIGHT in whole pixels, e.g. 1920x1080") from None
    if width < 1 or height < 1:
        raise ClipedgeError(f"{option} {text}: width and height must be at least 1 pixel")
    if pixel_format not in PIXEL_FORMATS:
        raise ClipedgeError(f"--pixel-format {pixel_format}: expected one of {', '.join(PIXEL_FORMATS)}")
    if pixel_format != "nv12":
        if colour_matrix:
            raise ClipedgeError(f"--colour-matrix {colour_matrix}: only NV12 frames carry YCbCr (add --pixel-format nv12)")
        return FrameInput(width, height, pixel_format)
    if width % 2 or height % 2:
        raise ClipedgeError(f"{option} {text} with --pixel-format nv12: width and height must be even "
                            "(NV12 stores one U, V pair per 2x2 pixels)")
    matrix = colour_matrix or default_colour_matrix(height)
    if matrix not in COLOUR_MATRICES:
        raise ClipedgeError(f"--colour-matrix {matrix}: expected one of {', '.join(COLOUR_MATRICES)}")
    return FrameInput(width, height, pixel_format, matrix)


def frame_input_spec(frame: FrameInput, fixed_batch: int | None) -> dict[str, Any]:
    """The ``input`` metadata entry of a ``--frame`` export."""
    layout = "NV12" if frame.pixel_format == "nv12" else "NHWC"
    return {"name": INPUT_NAME, "dtype": "uint8", "layout": layout, "channels": frame.pixel_format.upper(),
            "shape": [fixed_batch or "N", *frame.sample_shape], "frame": frame.to_dict()}


def frame_input_of(metadata: dict[str, str]) -> FrameInput | None:
    """The camera frame a model takes, from its ``input`` metadata; None for a model-size-image model."""
    try:
        facts = json.loads(metadata.get("input", "{}")).get("frame")
        if not facts:
            return None
        return FrameInput(int(facts["width"]), int(facts["height"]), str(facts["pixel_format"]),
                          facts.get("colour_matrix"))
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise ClipedgeError(f"model: malformed frame input metadata ({error})") from None


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
        raise ClipedgeError(f"model {engine}: missing {sidecar.name}, the sidecar `clipedge engine` writes") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"model {sidecar}: not a valid JSON sidecar ({error})") from None
    if not isinstance(facts, dict):
        raise ClipedgeError(f"model {sidecar}: expected a JSON object")
    return facts


def engine_fingerprint(engine: Path) -> dict[str, Any]:
    """Size and SHA-256 of an engine file: recorded in its sidecar, so a sidecar is never trusted for another
    engine (a rebuilt, copied-over or truncated one)."""
    digest = hashlib.sha256()
    with open(engine, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {"engine_bytes": engine.stat().st_size, "engine_sha256": digest.hexdigest()}


def check_sidecar_matches(engine: Path, sidecar: dict[str, Any]) -> None:
    """Refuse a sidecar whose recorded size or SHA-256 is not this engine file's (size first: it costs nothing)."""
    if "engine_sha256" not in sidecar:
        raise ClipedgeError(f"model {engine}: {sidecar_path(engine).name} records no engine_sha256 (written by an older "
                            f"clipedge); rebuild the engine with `clipedge engine MODEL.onnx`")
    size = engine.stat().st_size
    if size != sidecar.get("engine_bytes"):
        raise ClipedgeError(f"model {engine}: the file has {size} bytes but {sidecar_path(engine).name} describes one of "
                            f"{sidecar.get('engine_bytes')} bytes (truncated, or the sidecar of another engine)")
    if engine_fingerprint(engine)["engine_sha256"] != sidecar["engine_sha256"]:
        raise ClipedgeError(f"model {engine}: {sidecar_path(engine).name} belongs to another engine (SHA-256 differs); "
                            f"rebuild with `clipedge engine MODEL.onnx` or remove the sidecar")


def foreign_engine_metadata(engine: Path) -> dict[str, str]:
    """The contract of an engine without a sidecar (built by trtexec or Polygraphy): the metadata of the ONNX of the
    same name beside it, else class names from ``labels.txt`` beside it. The engine itself supplies the tensors."""
    onnx_file = engine.with_suffix(".onnx")
    labels = engine.with_name(LABELS_FILE)
    if onnx_file.is_file():
        metadata = read_onnx_metadata(onnx_file)
        if metadata is None:
            raise ClipedgeError(f"model {engine}: {onnx_file.name} beside it is not a valid ONNX model")
        return metadata
    if labels.is_file():
        try:
            names = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise ClipedgeError(f"model {engine}: {labels} is not UTF-8 text (one class name per line)") from None
        if not names:
            raise ClipedgeError(f"model {engine}: {labels} lists no class names (one per line)")
        return {"class_names": json.dumps(names)}
    raise ClipedgeError(f"model {engine}: no {sidecar_path(engine).name} sidecar, and neither {onnx_file.name} nor "
                        f"{LABELS_FILE} beside it to name the classes")


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


def recorded_batch_profile(metadata: dict[str, str]) -> BatchProfile:
    """The batch range a model was exported for: N,N,N for a fixed batch, else its recorded ``batch_profile``
    (exports before it was recorded: the default profile)."""
    batch = json.loads(metadata.get("input", "{}")).get("shape", [None])[0]
    if isinstance(batch, int):
        return BatchProfile(batch, batch, batch)
    return parse_batch(metadata.get(BATCH_PROFILE_KEY, DEFAULT_BATCH_PROFILE), BATCH_PROFILE_KEY)


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


# --- reference set ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceSet:
    """A few of the run's frames at model resolution and the fp32 PyTorch probabilities for them, embedded in the
    ONNX at export, so an engine built later on the device (without PyTorch or the run) is gated on the answers
    the exported model was gated on, with the export gate's tolerance for its precision."""

    frames: np.ndarray
    probs: np.ndarray
    min_agreement: float
    max_dprob: float | None

    def encode(self) -> str:
        frames = np.ascontiguousarray(self.frames, dtype=np.uint8)
        return json.dumps({"shape": list(frames.shape), "frames": base64.b64encode(frames.tobytes()).decode("ascii"),
                           "probs": np.asarray(self.probs, dtype=np.float32).tolist(),
                           "min_agreement": self.min_agreement, "max_dprob": self.max_dprob})

    def compare(self, probs: np.ndarray) -> dict[str, Any]:
        """Top-1 agreement and max |Δprob| of ``probs`` against the reference, and whether they pass."""
        agreement = float((probs.argmax(1) == self.probs.argmax(1)).mean())
        dprob = float(np.abs(probs - self.probs).max())
        passed = agreement >= self.min_agreement and (self.max_dprob is None or dprob <= self.max_dprob)
        return {"images": len(probs), "agreement": agreement, "max_dprob": dprob, "min_agreement": self.min_agreement,
                "max_dprob_allowed": self.max_dprob, "passed": passed}


def read_reference_set(metadata: dict[str, str], source: str | Path) -> ReferenceSet:
    """The embedded reference set; one line naming ``source`` when it is absent or malformed."""
    if REFERENCE_KEY not in metadata:
        raise ClipedgeError(f"model {source}: metadata lacks {REFERENCE_KEY} (the frames an engine is gated on); "
                            f"re-export it with this clipedge's `clipedge export`")
    try:
        entry = json.loads(metadata[REFERENCE_KEY])
        frames = np.frombuffer(base64.b64decode(entry["frames"]), dtype=np.uint8).reshape(entry["shape"])
        probs = np.asarray(entry["probs"], dtype=np.float32)
        maximum = entry["max_dprob"]
        reference = ReferenceSet(frames, probs, float(entry["min_agreement"]), None if maximum is None else float(maximum))
    except (ValueError, TypeError, KeyError) as error:
        raise ClipedgeError(f"model {source}: malformed {REFERENCE_KEY} metadata ({error})") from None
    if probs.ndim != 2 or len(probs) != len(frames):
        raise ClipedgeError(f"model {source}: {REFERENCE_KEY} has {len(frames)} frames but {len(probs)} probability rows")
    return reference


# --- onnxruntime ------------------------------------------------------------------------------------------------

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
TENSORRT_WORKSPACE_BYTES = 4 << 30
TENSORRT_OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on transformer encoders


def tensorrt_provider_options(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                              fp16_anywhere: bool = False, frame: FrameInput | None = None) -> dict[str, str]:
    """Options for onnxruntime's TensorRT execution provider: one profile over the model's batch range, engine
    and timing caches in ``cache_dir``.

    The profile must come from the model's batch range, never from the caller's batch size: a shape outside
    the cached profile makes onnxruntime rebuild the engine (microsoft/onnxruntime#16889). With
    ``fp16_anywhere`` off, onnxruntime builds a strongly typed TensorRT network (it does whenever neither
    fp16 nor int8 is enabled), which keeps the fp16 export's fp32 head and softmax, and an INT8 model's Q/DQ
    placement, exactly as the export gate checked them. A ``--frame`` model's profile is over its camera frame.
    """
    cache = str(Path(cache_dir))
    sample = frame.sample_shape if frame else (image_size, image_size, 3)

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *sample))

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
