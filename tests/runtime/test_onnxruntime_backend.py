"""The onnxruntime backend's choice of execution providers, where pip's side-by-side installs can hide the GPU."""

from __future__ import annotations

import pytest

from clipedge.core.errors import ClipedgeError


def test_a_cpu_onnxruntime_shadowing_the_gpu_build_is_named(monkeypatch, caplog):
    """pip installs onnxruntime and onnxruntime-gpu side by side (both ship one module); when the CPU build won,
    the missing GPU provider is explained with the fix, not just reported as absent."""
    from clipedge.runtime.backends import onnxruntime_backend as backend

    cpu_only = ["CPUExecutionProvider"]
    monkeypatch.setattr(backend, "_installed", lambda name: True)
    with pytest.raises(ClipedgeError, match="both installed .* pip uninstall -y onnxruntime onnxruntime-gpu"):
        backend.choose_providers(cpu_only, ["CUDAExecutionProvider"])
    with caplog.at_level("WARNING", logger=backend.__name__):
        assert backend.choose_providers(cpu_only, None) == cpu_only
    assert "running on the CPU" in caplog.text
    assert backend.shadowed_gpu_build(["CUDAExecutionProvider", *cpu_only]) == ""  # the GPU build won: nothing to say
    monkeypatch.setattr(backend, "_installed", lambda name: name == "onnxruntime")
    assert backend.shadowed_gpu_build(cpu_only) == ""  # a CPU-only install is not a problem
