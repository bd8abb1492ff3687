"""The engine builder's logic (profiles, flags, caches, errors) against a stand-in of the TensorRT 10.x API."""

from __future__ import annotations

import json
import types

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import current_gpu
from clipedge.runtime.contract import (
    BatchProfile,
)
from clipedge.runtime.tensorrt.engine_build import EngineSettings, serialize_network, strongly_typed_flags

# --- the builder's logic, against a stand-in ---------------------------------------------------------------------


class FakeTensorRT(types.SimpleNamespace):
    """Just enough of ``tensorrt`` for serialize_network; records every call in ``calls``."""

    def __init__(self, parse_ok: bool = True, cache_matches: bool = True, version: str = "10.99.0",
                 strongly_typed_value: int = 1):
        calls: dict = {"timing_caches": [], "flags": []}

        class Logger:
            WARNING = "warning"

            def __init__(self, level):
                calls["log_level"] = level

        class TimingCache:
            def __init__(self, blob: bytes):
                self.blob = blob

            def serialize(self):
                return memoryview(self.blob + b"+timings")

        class Config:
            builder_optimization_level = None
            hardware_compatibility_level = "NONE"

            def set_memory_pool_limit(self, pool, size):
                calls["pool"] = (pool, size)

            def set_flag(self, flag):
                calls["flags"].append(flag)

            def create_timing_cache(self, blob):
                return TimingCache(bytes(blob))

            def set_timing_cache(self, cache, ignore_mismatch):
                calls["timing_caches"].append(cache.blob)
                self.cache = cache
                return cache_matches or cache.blob == b""

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                calls["profile"] = profile.shapes

        class Profile:
            def set_shape(self, name, low, opt, high):
                self.shapes = (name, low, opt, high)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls["network_flags"] = flags
                return "network"

            def create_builder_config(self):
                calls["config"] = Config()
                return calls["config"]

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calls["optimization_level"] = config.builder_optimization_level
                calls["hardware_level"] = config.hardware_compatibility_level
                return memoryview(b"engine-bytes")

        class Error:
            def desc(self):
                return "Unsupported operator FancyOp"

        class OnnxParser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                calls["parsed"] = path
                return parse_ok

            def get_error(self, index):
                return Error()

        super().__init__(
            __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
            NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=strongly_typed_value),
            BuilderFlag=types.SimpleNamespace(VERSION_COMPATIBLE="version_compatible"),
            HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="ampere_plus"),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"), calls=calls,
        )


def test_logic_strongly_typed_profile_workspace_and_timing_cache(tmp_path):
    trt = FakeTensorRT()
    cache = tmp_path / "cache" / "timing.cache"
    settings = EngineSettings(BatchProfile(1, 8, 32), 224, workspace_gib=2, optimization_level=4, timing_cache=cache)
    assert serialize_network(trt, tmp_path / "model.fp16.onnx", settings) == b"engine-bytes"
    assert trt.calls["network_flags"] == 1 << 1 and trt.calls["flags"] == []  # no precision flag, ever
    assert trt.calls["pool"] == ("workspace", 2 << 30)
    assert trt.calls["optimization_level"] == 4 and trt.calls["hardware_level"] == "NONE"
    assert trt.calls["profile"] == ("images", (1, 224, 224, 3), (8, 224, 224, 3), (32, 224, 224, 3))
    assert trt.calls["timing_caches"] == [b""] and cache.read_bytes() == b"+timings"
    flags = settings.build_flags()
    assert flags["profile"] == "1,8,32" and flags["strongly_typed"] is True
    json.dumps(flags)  # the sidecar must be JSON
    serialize_network(trt, tmp_path / "model.fp16.onnx", settings)  # a second build reuses the cache
    assert trt.calls["timing_caches"][-1] == b"+timings" and cache.read_bytes() == b"+timings+timings"


def test_logic_tensorrt_11_keeps_the_deprecated_flag():
    """TensorRT 11's NvInfer.h: kSTRONGLY_TYPED = 0, "Deprecated in TensorRT 11.0. Strongly typed mode is always
    enabled. This flag is retained for API compatibility but is ignored." (10.x: value 1). Passed by name in both."""
    assert strongly_typed_flags(FakeTensorRT(version="11.1.0", strongly_typed_value=0)) == 1 << 0
    assert strongly_typed_flags(FakeTensorRT(version="10.3.0", strongly_typed_value=1)) == 1 << 1


def test_logic_version_and_hardware_compatible_engines(tmp_path):
    trt = FakeTensorRT()
    settings = EngineSettings(BatchProfile(1, 1, 1), 32, version_compatible=True, hardware_compatible=True)
    serialize_network(trt, tmp_path / "m.onnx", settings)
    assert trt.calls["flags"] == ["version_compatible"] and trt.calls["hardware_level"] == "ampere_plus"


def test_logic_timing_cache_from_another_gpu_is_replaced(tmp_path):
    trt = FakeTensorRT(cache_matches=False)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"other-gpu")
    serialize_network(trt, tmp_path / "m.onnx", EngineSettings(BatchProfile(1, 1, 1), 32, timing_cache=cache))
    assert trt.calls["timing_caches"] == [b"other-gpu", b""]


def test_logic_unparseable_onnx_is_one_clear_line(tmp_path):
    with pytest.raises(ClipedgeError, match="TensorRT could not parse it: Unsupported operator FancyOp"):
        serialize_network(FakeTensorRT(parse_ok=False), tmp_path / "m.onnx", EngineSettings(BatchProfile(1, 1, 1), 32))


def test_logic_no_visible_gpu_is_one_line():
    no_devices = types.SimpleNamespace(cudaGetDeviceCount=lambda: (0, 0))
    with pytest.raises(ClipedgeError, match="no CUDA GPU is visible"):
        current_gpu(no_devices)
