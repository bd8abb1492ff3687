"""The CUDA runtime calls of the TensorRT path, against cuda-python itself (it installs without a GPU: torch's CUDA
build depends on it), so the names are NVIDIA's and the no-driver refusal is the real one."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import INSUFFICIENT_DRIVER, current_gpu, import_cudart

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) is not installed")
CALLERS = ["clipedge.runtime.backends.tensorrt_backend", "clipedge.runtime.backends.tensorrt_environment"]
#: local names in those modules that hold a part of the runtime module
ALIASES = {"kind": ("cudaMemcpyKind",)}


def cuda_chains(module: str) -> set[tuple[str, ...]]:
    """Attribute chains rooted at the CUDA runtime module (``cudart.X``, ``self.cudart.X.Y``, aliases)."""
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    chains = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts, value = [node.attr], node.value
        while isinstance(value, ast.Attribute) and ast.unparse(value) != "self.cudart":
            parts.insert(0, value.attr)
            value = value.value
        root = ast.unparse(value)
        if root in ("cudart", "self.cudart"):
            chains.add(tuple(parts))
        elif root in ALIASES:
            chains.add((*ALIASES[root], *parts))
    return chains


@pytest.mark.parametrize("module", CALLERS)
def test_every_cuda_runtime_name_the_code_calls_exists(module):
    chains = cuda_chains(module)
    assert chains, f"{module}: no CUDA runtime use found; the scan no longer sees the code"
    for chain in chains:
        owner = runtime
        for part in chain:
            assert hasattr(owner, part), f"{module}: cudart.{'.'.join(chain)} is not in cuda-python's runtime"
            owner = getattr(owner, part)


def test_the_device_properties_and_the_error_code_read_exist():
    properties = runtime.cudaDeviceProp()
    assert all(hasattr(properties, name) for name in ("name", "major", "minor"))
    assert int(runtime.cudaError_t.cudaErrorInsufficientDriver) == INSUFFICIENT_DRIVER


def test_import_cudart_finds_the_installed_bindings():
    assert import_cudart() is runtime


def test_without_a_driver_the_refusal_is_one_line_and_says_what_to_install():
    error, _ = runtime.cudaGetDeviceCount()
    if error == runtime.cudaError_t.cudaSuccess:
        pytest.skip("a CUDA driver answers here: the refusal applies where none does")
    with pytest.raises(ClipedgeError) as refused:
        current_gpu(runtime)
    message = str(refused.value)
    assert "\n" not in message
    if error == runtime.cudaError_t.cudaErrorInsufficientDriver:
        assert "cudaErrorInsufficientDriver" in message and "'cuda-python>=12.6,<13'" in message
    else:
        assert "no CUDA GPU is visible" in message
