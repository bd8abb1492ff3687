"""The TensorRT backend where TensorRT is absent: engines for another GPU, sidecar problems, the install hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx_models import COLOURS

from clipedge.core.errors import ClipedgeError
from clipedge.runtime import Classifier
from clipedge.runtime.backends.tensorrt_backend import check_compatible
from clipedge.runtime.contract import engine_fingerprint, read_sidecar, sidecar_path


def test_engine_for_another_gpu_or_tensorrt_is_refused(caplog):
    sidecar = {"gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    check_compatible(Path("m.engine"), sidecar, "NVIDIA Jetson AGX Orin", "8.7", "10.3.0")
    with pytest.raises(ClipedgeError) as error:
        check_compatible(Path("m.engine"), sidecar, "NVIDIA H100 80GB HBM3", "9.0", "10.3.0")
    assert ("built for NVIDIA Jetson AGX Orin (compute 8.7) but this GPU is NVIDIA H100 80GB HBM3 (compute 9.0)"
            in str(error.value)) and "\n" not in str(error.value)
    with pytest.raises(ClipedgeError, match="built with TensorRT 10.3.0 but TensorRT 10.8.0 is installed"):
        check_compatible(Path("m.engine"), sidecar, "NVIDIA Jetson AGX Orin", "8.7", "10.8.0")
    check_compatible(Path("m.engine"), sidecar, "NVIDIA Jetson Orin NX", "8.7", "10.3.0")  # same architecture: a warning
    assert "built on NVIDIA Jetson AGX Orin, running on NVIDIA Jetson Orin NX" in caplog.text
    portable = {**sidecar, "build_flags": {"hardware_compatible": True, "version_compatible": True}}
    check_compatible(Path("m.engine"), portable, "NVIDIA H100 80GB HBM3", "9.0", "10.8.0")  # TensorRT decides


def test_engine_sidecar_problems(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    with pytest.raises(ClipedgeError, match="missing model.engine.json"):
        read_sidecar(engine)
    (tmp_path / "model.engine.json").write_text("{broken")
    with pytest.raises(ClipedgeError, match="not a valid JSON sidecar"):
        read_sidecar(engine)
    (tmp_path / "model.engine.json").write_text(json.dumps({"gpu_name": "x", "class_names": COLOURS}))
    assert read_sidecar(engine)["class_names"] == COLOURS


def test_engine_without_tensorrt_says_what_to_install(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        engine = tmp_path / "model.engine"
        engine.write_bytes(b"engine bytes")
        sidecar_path(engine).write_text(json.dumps({"class_names": COLOURS, **engine_fingerprint(engine)}))
        with pytest.raises(ClipedgeError, match=r"TensorRT is not installed; pip install 'clipedge\[tensorrt\]'"):
            Classifier(engine)
    else:
        pytest.skip("tensorrt is installed here: the engine path is covered by tests/test_engine_build.py")
