"""The TensorRT build logic without TensorRT: a stand-in module records what the builder is asked to do.

The stand-in follows the TensorRT 10 Python API names the builder uses
(Builder, NetworkDefinitionCreationFlag, OnnxParser, MemoryPoolType, timing
caches, optimisation profiles); the real build runs in test_export.py on
machines with a GPU and TensorRT.
"""

from __future__ import annotations

import json
import types
import pytest

from clipedge.errors import ClipedgeError
from clipedge.export import tensorrt_build
from clipedge.runtime.contract import BatchProfile, tensorrt_provider_options, tensorrt_providers
from clipedge.export.tensorrt_build import EngineSettings, build_engine


class FakeTensorRT(types.SimpleNamespace):
    """Just enough of ``tensorrt`` for build_engine; records every call in ``calls``."""

    def __init__(self, parse_ok: bool = True, cache_matches: bool = True, version: str = "10.99.0"):
        calls: dict = {"timing_caches": []}

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

            def set_memory_pool_limit(self, pool, size):
                calls["pool"] = (pool, size)

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
            NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"), calls=calls,
        )


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kwargs) -> FakeTensorRT:
        trt = FakeTensorRT(**kwargs)
        monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(tensorrt_build, "gpu_identity", lambda: {"gpu_name": "Fake GPU", "compute_capability": "8.7"})
        return trt

    return install


def test_build_engine_strongly_typed_profile_workspace_and_timing_cache(fake_trt, tmp_path):
    trt = fake_trt()
    cache = tmp_path / "cache" / "timing.cache"
    settings = EngineSettings(BatchProfile(1, 8, 32), 224, workspace_gib=2, optimization_level=4, timing_cache=cache)
    facts = build_engine(tmp_path / "model.fp16.onnx", tmp_path / "model.engine", settings)
    assert (tmp_path / "model.engine").read_bytes() == b"engine-bytes"
    assert trt.calls["network_flags"] == 1 << 1
    assert trt.calls["pool"] == ("workspace", 2 << 30)
    assert trt.calls["optimization_level"] == 4
    assert trt.calls["profile"] == ("images", (1, 224, 224, 3), (8, 224, 224, 3), (32, 224, 224, 3))
    assert trt.calls["timing_caches"] == [b""] and cache.read_bytes() == b"+timings"
    assert facts["tensorrt_version"] == "10.99.0" and facts["compute_capability"] == "8.7"
    assert facts["build_flags"]["profile"] == "1,8,32" and facts["build_flags"]["strongly_typed"] is True
    json.dumps(facts)  # the sidecar must be JSON

    build_engine(tmp_path / "model.fp16.onnx", tmp_path / "model.engine", settings)  # a second build reuses the cache
    assert trt.calls["timing_caches"][-1] == b"+timings" and cache.read_bytes() == b"+timings+timings"


def test_tensorrt_11_builds_strongly_typed_without_the_flag(fake_trt, tmp_path):
    trt = fake_trt(version="11.4.1")
    del trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED  # gone with weak typing
    build_engine(tmp_path / "model.int8.onnx", tmp_path / "model.int8.engine", EngineSettings(BatchProfile(1, 1, 1), 32))
    assert trt.calls["network_flags"] == 0 and (tmp_path / "model.int8.engine").read_bytes() == b"engine-bytes"


def test_timing_cache_from_another_gpu_is_replaced(fake_trt, tmp_path):
    trt = fake_trt(cache_matches=False)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"other-gpu")
    build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", EngineSettings(BatchProfile(1, 1, 1), 32, timing_cache=cache))
    assert trt.calls["timing_caches"] == [b"other-gpu", b""]


def test_unparseable_onnx_is_one_clear_line(fake_trt, tmp_path):
    fake_trt(parse_ok=False)
    with pytest.raises(ClipedgeError, match="could not parse m.onnx: Unsupported operator FancyOp"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", EngineSettings(BatchProfile(1, 1, 1), 32))
    assert not (tmp_path / "m.engine").exists()


def test_onnxruntime_tensorrt_provider_options(tmp_path):
    options = tensorrt_provider_options(tmp_path / "trt", 224, BatchProfile(1, 8, 32))
    assert options["trt_fp16_enable"] == "False"  # keep the ONNX's own precisions: a strongly typed network
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert options["trt_timing_cache_enable"] == "True"
    assert (options["trt_profile_min_shapes"], options["trt_profile_opt_shapes"], options["trt_profile_max_shapes"]) == (
        "images:1x224x224x3", "images:8x224x224x3", "images:32x224x224x3")
    assert all(isinstance(v, str) for v in options.values())
    providers = tensorrt_providers(tmp_path, 224, BatchProfile(1, 8, 32), fp16_anywhere=True)
    assert providers[0][0] == "TensorrtExecutionProvider" and providers[0][1]["trt_fp16_enable"] == "True"
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnxruntime_tensorrt_provider_runs_an_export(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no TensorRT execution provider (needs onnxruntime-gpu, TensorRT and a GPU)")
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["x"], ["probs"], keepdims=0, axes=[1, 2])],
        "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sess = ort.InferenceSession(str(path), providers=tensorrt_providers(tmp_path / "trt", 8, BatchProfile(1, 2, 4)))
    out = sess.run(None, {"images": np.full((2, 8, 8, 3), 7, np.uint8)})[0]
    assert sess.get_providers()[0] == "TensorrtExecutionProvider" and np.allclose(out, 7)
