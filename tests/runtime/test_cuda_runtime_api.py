"""The CUDA runtime calls of the TensorRT path, against cuda-python itself (it installs without a GPU: torch's CUDA
build depends on it), so the names are NVIDIA's and the no-driver refusal is the real one."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import (
    INSUFFICIENT_DRIVER,
    NO_GPU,
    current_gpu,
    import_cudart,
)

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) is not installed")
CALLERS = ["clipedge.runtime.backends.tensorrt_backend", "clipedge.runtime.backends.tensorrt_environment"]
ROOTS = ("cudart", "self.cudart")


def chain_of(node: ast.AST, aliases: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The runtime-module attribute chain ``node`` reads (``cudart.X.Y``, ``self.cudart.X``, ``alias.Y``), or None."""
    parts = []
    while isinstance(node, ast.Attribute) and ast.unparse(node) not in ROOTS:
        parts.insert(0, node.attr)
        node = node.value
    root = ast.unparse(node)
    if root in ROOTS and parts:
        return tuple(parts)
    return (*aliases[root], *parts) if root in aliases and parts else None


def cuda_chains(module: str) -> set[tuple[str, ...]]:
    """Every attribute chain of the CUDA runtime module that ``module`` reads, through local aliases too
    (``kind = self.cudart.cudaMemcpyKind`` makes ``kind.cudaMemcpyHostToDevice`` a chain)."""
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    aliases: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            chain = chain_of(node.value, {})
            if chain:
                aliases[node.targets[0].id] = chain
    return {chain for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            if (chain := chain_of(node, aliases))}


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


def test_without_a_usable_driver_the_refusal_is_one_line_and_says_why():
    error, _ = runtime.cudaGetDeviceCount()
    if error == runtime.cudaError_t.cudaSuccess:
        pytest.skip("a CUDA driver answers here: the refusal applies where none does")
    with pytest.raises(ClipedgeError) as refused:
        current_gpu(runtime)
    message = str(refused.value)
    assert "\n" not in message
    _, driver = runtime.cudaDriverGetVersion()
    if error == runtime.cudaError_t.cudaErrorInsufficientDriver and driver:
        assert "older than cuda-python's CUDA runtime" in message and "'cuda-python>=12.6,<13'" in message
    else:
        assert message == NO_GPU


def test_a_driver_older_than_the_bindings_names_its_cuda_version_and_the_pin():
    """Where no old driver exists to run against: cuda-python's own error values, a CUDA 12.6 driver's answers."""
    old_driver = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (runtime.cudaError_t.cudaErrorInsufficientDriver, 0),
        cudaDriverGetVersion=lambda: (runtime.cudaError_t.cudaSuccess, 12060))
    with pytest.raises(ClipedgeError, match=r"this driver \(CUDA 12\.6\) is older .*'cuda-python>=12\.6,<13'"):
        current_gpu(old_driver)
