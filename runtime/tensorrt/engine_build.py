"""``clipedge engine``: a TensorRT engine from an exported ONNX, built and gated on the GPU that will run it.

Torch-free and run-free: an engine must be built on the device that runs it (its GPU architecture and TensorRT
version), and a Jetson in the field has TensorRT but neither PyTorch nor the run directory. Everything the
build needs travels in the ONNX's metadata: the contract (class names, input), the batch profile it was
exported for, and a small reference set (frames and fp32 PyTorch probabilities) the engine must reproduce
within the export gate's tolerance, or nothing is written. ``clipedge export --format engine`` calls this.

The network is strongly typed: TensorRT keeps exactly the precisions the ONNX declares (fp32; or an fp16 encoder
with an fp32 head and softmax; or INT8 where the Q/DQ pairs say), the graph the export gate checked. No builder
precision flag is ever set (TensorRT 10 refuses them on strongly typed networks). TensorRT 11 deprecated the
STRONGLY_TYPED creation flag and ignores it, strong typing being always on; the flag still exists there
(NVIDIA/TensorRT ``include/NvInfer.h`` on main, TensorRT 11.1: "kSTRONGLY_TYPED ... Deprecated in TensorRT 11.0.
Strongly typed mode is always enabled. This flag is retained for API compatibility but is ignored."; its value
moved from 1 in 10.x to 0), so it is always passed by name.

The timing cache (per-layer kernel timings) is shared by every build on this machine by default, so a second
build of the same backbone takes a fraction of the time.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.atomic import check_destination, publish, staging_folder, write_atomically
from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import current_gpu, import_cudart, import_tensorrt
from clipedge.runtime.classes import bank_path_for, load_bank
from clipedge.runtime.classes.model_classes import EMBEDDINGS, is_adaptable, model_space
from clipedge.runtime.classes.readout import bank_probabilities
from clipedge.runtime.contract import (
    INPUT_NAME,
    REFERENCE_KEY,
    BatchProfile,
    ReferenceSet,
    engine_fingerprint,
    missing_contract_keys,
    parse_batch,
    read_contract,
    read_reference_set,
    recorded_batch_profile,
    run_in_batches,
    sidecar_path,
)
from clipedge.runtime.contract.onnx_metadata import onnx_metadata_of
from clipedge.runtime.tensorrt.check import require_tensorrt_compatible

log = logging.getLogger(__name__)

WORKSPACE_GIB = 4
OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on transformer encoders


def default_timing_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "clipedge" / "tensorrt.timing-cache"


@dataclass(frozen=True)
class EngineSettings:
    """How the builder is configured; recorded in the sidecar as ``build_flags``."""

    profile: BatchProfile
    image_size: int
    workspace_gib: float = WORKSPACE_GIB
    optimization_level: int = OPTIMIZATION_LEVEL
    timing_cache: Path | None = None
    #: runs on later TensorRT versions too (a lean runtime inside the plan); slower to build and load
    version_compatible: bool = False
    #: runs on every Ampere-or-newer GPU instead of this compute capability only
    hardware_compatible: bool = False

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) input shapes of the optimisation profile."""
        size = self.image_size
        return tuple((batch, size, size, 3) for batch in (self.profile.min, self.profile.opt, self.profile.max))

    def build_flags(self) -> dict[str, Any]:
        cache = str(self.timing_cache) if self.timing_cache else None
        return {**asdict(self), "profile": str(self.profile), "timing_cache": cache, "strongly_typed": True}


def strongly_typed_flags(trt: Any) -> int:
    """Network creation flags: STRONGLY_TYPED, by name (its value is 1 in TensorRT 10 and 0 in 11, where it is
    deprecated and ignored because every network is strongly typed)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def serialize_network(trt: Any, onnx_path: Path, settings: EngineSettings) -> bytes:
    """Parse the ONNX into a strongly typed network and build the serialized engine (the GPU-only part)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise ClipedgeError(f"model {onnx_path}: TensorRT could not parse it: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    config.builder_optimization_level = settings.optimization_level
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    cache = settings.timing_cache
    cache_bytes = cache.read_bytes() if cache and cache.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False) is False:
        log.warning("timing cache %s was made on another GPU or TensorRT version; starting a new one", cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *settings.shapes())
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ClipedgeError(f"model {onnx_path}: TensorRT failed to build an engine (see its log above)")
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


@dataclass
class EngineBuild:
    """What ``build_engine`` wrote and how the engine checked out on the reference set."""

    engine: Path
    sidecar: Path
    facts: dict[str, Any]
    gate: dict[str, Any]


def engine_path_for(onnx_path: Path) -> Path:
    """model.fp16.onnx → model.fp16.engine: an engine sits beside the ONNX it was built from, with the same stem."""
    return onnx_path.with_suffix(".engine")


def read_buildable_metadata(onnx_path: Path) -> dict[str, str]:
    """The metadata of a clipedge ONNX that carries everything a build needs; one line naming what is missing."""
    if not onnx_path.is_file():
        raise ClipedgeError(f"model {onnx_path}: no such file")
    metadata = onnx_metadata_of(onnx_path)
    missing = missing_contract_keys(metadata) + ([REFERENCE_KEY] if REFERENCE_KEY not in metadata else [])
    if missing:
        raise ClipedgeError(f"model {onnx_path}: not a clipedge export with a reference set (metadata lacks "
                            f"{', '.join(missing)}); export it with `clipedge export RUN`")
    return metadata


def resolve_profile(batch: str | int | None, metadata: dict[str, str], source: Path) -> BatchProfile:
    """``--batch`` if given (it must fit a fixed-batch model), else the range the model was exported for."""
    recorded = recorded_batch_profile(metadata)
    if batch is None:
        return recorded
    profile = parse_batch(batch)
    fixed = read_contract(metadata, source).fixed_batch
    if fixed is not None and profile != recorded:
        raise ClipedgeError(f"--batch {batch}: {source} takes exactly batch {fixed}; drop --batch or give {fixed}")
    return profile


def _sidecar_value(value: str) -> Any:
    """Metadata strings that hold JSON lists or objects go into the sidecar as JSON, the rest as they are."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (list, dict)) else value


def build_engine(onnx_path: str | Path, out: str | Path | None = None, batch: str | int | None = None,
                 timing_cache: str | Path | None = None, version_compatible: bool = False,
                 hardware_compatible: bool = False, workspace_gib: float = WORKSPACE_GIB,
                 optimization_level: int = OPTIMIZATION_LEVEL) -> EngineBuild:
    """Check, build, gate and write ``out`` (default: the ONNX's name with ``.engine``) and its sidecar.

    Every input is checked before TensorRT is touched: the contract and reference set in the metadata, the batch
    profile, the destination, the static TensorRT check. Then the engine is built into a staging folder, run on
    the reference frames through the runtime's TensorRT backend, and published with its sidecar only if it
    reproduces the fp32 PyTorch probabilities within the export gate's tolerance.
    """
    onnx_path = Path(onnx_path)
    metadata = read_buildable_metadata(onnx_path)
    contract = read_contract(metadata, onnx_path)
    reference = read_reference_set(metadata, onnx_path)
    profile = resolve_profile(batch, metadata, onnx_path)
    engine_path = Path(out) if out else engine_path_for(onnx_path)
    check_destination(engine_path)
    require_tensorrt_compatible(onnx_path)
    trt = import_tensorrt()
    gpu = current_gpu(import_cudart())
    settings = EngineSettings(profile, contract.image_size, workspace_gib, optimization_level,
                              Path(timing_cache) if timing_cache else default_timing_cache(),
                              version_compatible, hardware_compatible)
    with staging_folder(engine_path) as staging:
        staged = staging / engine_path.name
        staged.write_bytes(serialize_network(trt, onnx_path, settings))
        contract_facts = {key: _sidecar_value(value) for key, value in metadata.items() if key != REFERENCE_KEY}
        facts = {**contract_facts, "tensorrt_version": trt.__version__, **gpu, "build_flags": settings.build_flags(),
                 "source_onnx": onnx_path.name, **engine_fingerprint(staged)}
        sidecar = sidecar_path(staged)
        sidecar.write_text(json.dumps(facts, indent=2) + "\n")
        gate = gate_engine(staged, reference, onnx_path, metadata)
        if not gate["passed"]:
            raise ClipedgeError(f"model {onnx_path}: the TensorRT engine failed its gate on the {gate['images']} "
                                f"reference frames: {describe_gate(gate)}; nothing was written")
        facts["engine_gate"] = gate
        sidecar.write_text(json.dumps(facts, indent=2) + "\n")
        publish(sidecar, sidecar_path(engine_path))
        publish(staged, engine_path)
    return EngineBuild(engine_path, sidecar_path(engine_path), facts, gate)


def gate_engine(engine: Path, reference: ReferenceSet, onnx_path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """Run the engine through the runtime's TensorRT backend (what users run) on the reference frames."""
    from clipedge.runtime.backends.tensorrt_backend import TensorRTBackend

    with TensorRTBackend(engine) as backend:
        low, high = backend.batch_range
        outputs = run_in_batches(backend.infer, reference.frames, high, low)
    return gate_outputs(outputs, reference, onnx_path, metadata)


def gate_outputs(outputs: dict[str, np.ndarray], reference: ReferenceSet, onnx_path: Path,
                 metadata: dict[str, str]) -> dict[str, Any]:
    """The gate on a built model's outputs for the reference frames.

    A fused model's ``probs`` are held to the fp32 PyTorch probabilities. An adaptable model's ``embeddings``
    are read out through the class bank beside the ONNX (the one the engine will serve with, which the device
    may have changed since the export), and so are the reference's fp32 PyTorch embeddings, and the two sets
    of probabilities are held to each other with the same tolerance.
    """
    if not is_adaptable(metadata):
        return reference.compare(outputs["probs"])
    if reference.embeddings is None:
        raise ClipedgeError(f"model {onnx_path}: adaptable, but its reference set has no embeddings; re-export it with "
                            "this clipedge's `clipedge export RUN --adaptable`")
    embeddings = outputs[EMBEDDINGS]
    bank = load_bank(bank_path_for(onnx_path), model_space(onnx_path, metadata, embeddings.shape[1]))
    read_out = reference.through(lambda e: bank_probabilities(bank, e))
    return {**read_out.compare(bank_probabilities(bank, embeddings)), "bank_revision": bank.revision,
            "classes": len(bank.names)}


def describe_gate(gate: dict[str, Any]) -> str:
    allowed = gate["max_dprob_allowed"]
    bound = f" and ≤ {allowed:.3g}" if allowed is not None else ""
    return (f"top-1 agreement {100 * gate['agreement']:.2f} %, max |Δprob| {gate['max_dprob']:.2e}; required "
            f"≥ {100 * gate['min_agreement']:g} %{bound}")
