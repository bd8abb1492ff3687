"""Serialized TensorRT engines from the exported ONNX (TensorRT 10 and 11 Python API), imported only when asked for.

The network is built *strongly typed* from the fp16 ONNX: TensorRT then keeps
exactly the precisions the ONNX declares (an fp16 encoder; an fp32 head,
normalisation and softmax), the graph the parity gate already checked. The
FP16 builder flag on an fp32 network would instead let TensorRT choose fp16
for any layer it times faster, the head and the softmax included, which is
what the fp32 islands in :mod:`clipedge.export.fuse` exist to prevent (and
TensorRT 10 refuses precision flags on strongly typed networks anyway).

INT8 engines come from the INT8 QDQ ONNX (:mod:`clipedge.calibration.qdq`)
the same way: explicit quantization, which TensorRT's documentation pairs
with strong typing and no precision flags. Its Q/DQ pairs say exactly which
convolutions and matrix products run in INT8; the rest keeps the ONNX's fp32.
TensorRT 11 removed weak typing, and with it the flag that asks for strong typing.

The timing cache (per-layer kernel timings) is shared by every build on this
machine by default, so a second ViT-B/16 run builds in a fraction of the time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipedge.atomic import write_atomically
from clipedge.errors import ClipedgeError
from clipedge.runtime.contract import INPUT_NAME, BatchProfile

from .parity import ParityReference, ParityResult, backend_probs, compare

log = logging.getLogger(__name__)

INSTALL_HINT = "install it on a machine with an NVIDIA GPU: pip install 'clipedge[tensorrt]'"
WORKSPACE_GIB = 4
OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on transformer encoders


def default_timing_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "clipedge" / "tensorrt.timing-cache"


@dataclass(frozen=True)
class EngineSettings:
    profile: BatchProfile
    image_size: int
    workspace_gib: float = WORKSPACE_GIB
    optimization_level: int = OPTIMIZATION_LEVEL
    timing_cache: Path | None = None

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) input shapes of the optimisation profile."""
        size = self.image_size
        return tuple((batch, size, size, 3) for batch in (self.profile.min, self.profile.opt, self.profile.max))

    def build_flags(self) -> dict[str, Any]:
        cache = str(self.timing_cache) if self.timing_cache else None
        return {**asdict(self), "profile": str(self.profile), "timing_cache": cache, "strongly_typed": True}


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise ClipedgeError(f"--format engine: TensorRT is not installed; {INSTALL_HINT}") from None
    return tensorrt


def gpu_identity() -> dict[str, str]:
    """Name and compute capability of the GPU an engine is built for; engines only run there."""
    import torch

    if not torch.cuda.is_available():
        raise ClipedgeError("--format engine: no CUDA GPU is visible; TensorRT engines are built on the GPU they run on")
    major, minor = torch.cuda.get_device_capability()
    return {"gpu_name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def strongly_typed_flags(trt: Any) -> int:
    """Network creation flags for a strongly typed network: TensorRT 10 asks for it by a flag; where the flag
    is gone (TensorRT 11 removed weak typing), every network is strongly typed."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(onnx_path: Path, engine_path: Path, settings: EngineSettings) -> dict[str, Any]:
    """Parse, build and serialise to ``engine_path``; returns the build facts for the sidecar."""
    gpu = gpu_identity()
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise ClipedgeError(f"--format engine: TensorRT could not parse {onnx_path.name}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    config.builder_optimization_level = settings.optimization_level
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
        raise ClipedgeError(f"--format engine: TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, bytes(config.get_timing_cache().serialize()))
    return {"tensorrt_version": trt.__version__, **gpu, "build_flags": settings.build_flags()}


def engine_parity(engine_path: Path, reference: ParityReference, precision: str, temperature: float | None = None,
                  min_agreement: float | None = None) -> ParityResult:
    """Run the built engine (through the runtime's TensorRT backend) on the parity frames."""
    from clipedge.runtime.backends.tensorrt_backend import TensorRTBackend

    with TensorRTBackend(engine_path) as backend:
        probs = backend_probs(backend, reference.frames)
    return compare(probs, reference, precision, temperature, min_agreement)
