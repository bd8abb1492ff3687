"""Serialized TensorRT engines from the exported ONNX (TensorRT 10 Python API).

The network is built *strongly typed* from the fp16 ONNX: TensorRT then keeps
exactly the precisions the ONNX declares (an fp16 encoder; an fp32 head,
normalisation and softmax), the same graph the parity gate checked. The FP16
builder flag would instead let TensorRT pick fp16 anywhere, including the
softmax, which is what the fp32 islands exist to prevent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.errors import ClipedgeError

from .batch import BatchProfile

INSTALL_HINT = "install it on a machine with an NVIDIA GPU: pip install 'clipedge[tensorrt]'"
WORKSPACE_GIB = 4
OPTIMIZATION_LEVEL = 3


@dataclass(frozen=True)
class EngineSettings:
    profile: BatchProfile
    image_size: int
    workspace_gib: int = WORKSPACE_GIB
    optimization_level: int = OPTIMIZATION_LEVEL
    timing_cache: Path | None = None

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        size = self.image_size
        return tuple((batch, size, size, 3) for batch in (self.profile.min, self.profile.opt, self.profile.max))


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ClipedgeError(f"--format engine: TensorRT is not installed; {INSTALL_HINT}") from None
    return tensorrt


def gpu_identity() -> dict[str, Any]:
    """Name and compute capability of the GPU an engine is built for; engines only run there."""
    import torch

    if not torch.cuda.is_available():
        raise ClipedgeError("--format engine: no CUDA GPU is visible; TensorRT engines are built on the GPU they run on")
    major, minor = torch.cuda.get_device_capability()
    return {"gpu_name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path: Path, engine_path: Path, settings: EngineSettings) -> dict[str, Any]:
    """Parse, build and serialise; returns the build facts for the sidecar. Writes atomically."""
    gpu = gpu_identity()
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise ClipedgeError(f"--format engine: TensorRT could not parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_gib << 30)
    config.builder_optimization_level = settings.optimization_level
    cache_bytes = settings.timing_cache.read_bytes() if settings.timing_cache and settings.timing_cache.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape("images", *settings.shapes())
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ClipedgeError(f"--format engine: TensorRT failed to build an engine from {onnx_path} (see its log above)")
    write_atomically(engine_path, bytes(serialized))
    if settings.timing_cache:
        write_atomically(settings.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt_version": trt.__version__,
        **gpu,
        "build_flags": {
            "strongly_typed": True,
            "batch_profile": str(settings.profile),
            "workspace_gib": settings.workspace_gib,
            "builder_optimization_level": settings.optimization_level,
            "timing_cache": str(settings.timing_cache) if settings.timing_cache else None,
        },
    }


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_sidecar(engine_path: Path, facts: dict[str, Any]) -> Path:
    sidecar = engine_path.with_name(engine_path.name + ".json")
    write_atomically(sidecar, (json.dumps(facts, indent=2) + "\n").encode())
    return sidecar
