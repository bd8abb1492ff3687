"""Every TensorRT name clipedge calls, and every name its TensorRT stand-in offers, exists in NVIDIA's bindings.

TensorRT cannot be installed where CI runs, so the engine builder's tests run against ``FakeTensorRT``
(test_engine_build_logic.py) and the TensorRT backend runs nowhere here. This holds both to what NVIDIA
publishes, not to our reading of it: the names bound by ``python/src/**/*.cpp`` and the package's ``__init__.py``
in NVIDIA/TensorRT, recorded per release by scripts/tensorrt_api_names.py (tests/vendor/tensorrt_api/: JetPack
6's 10.3, the last 10.x, and 11.x). What a name does is left to the real-TensorRT tests, which run where TensorRT
and a GPU exist.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[1] / "vendor" / "tensorrt_api"
RELEASES = sorted(VENDOR.glob("tensorrt-*.json"))
#: the modules that call TensorRT → (the function or class that holds TensorRT objects, its receivers → their
#: TensorRT class). Every name there assigned from a TensorRT call is a receiver or in OPAQUE, so none goes unchecked.
CALLERS = {
    "clipedge.runtime.tensorrt.engine_build": ("serialize_network", {
        "builder": "Builder", "parser": "OnnxParser", "config": "IBuilderConfig", "profile": "IOptimizationProfile",
        "parser.get_error(0)": "ParserError", "config.get_timing_cache()": "ITimingCache"}),
    "clipedge.runtime.backends.tensorrt_backend": ("TensorRTBackend", {
        "runtime": "Runtime", "self.engine": "ICudaEngine", "self.context": "IExecutionContext"}),
}
#: TensorRT objects the code only passes on or indexes, never reads an attribute of (asserted below)
OPAQUE = {"logger", "network", "serialized", "low", "_", "high"}
ROOTS = ("trt", "self.trt")
#: FakeTensorRT's classes → the TensorRT classes they stand in for
STAND_INS = {"Logger": "Logger", "TimingCache": "ITimingCache", "Config": "IBuilderConfig",
             "Profile": "IOptimizationProfile", "Builder": "Builder", "Error": "ParserError", "OnnxParser": "OnnxParser"}


class Api:
    """One release's bound names, members inherited through the bound base classes."""

    def __init__(self, path: Path):
        recorded = json.loads(path.read_text())
        self.version, self.module, self.classes = recorded["version"], set(recorded["module"]), recorded["classes"]

    def members(self, name: str) -> dict[str, list[str]]:
        entry = self.classes[name]
        inherited = [self.members(base) for base in entry["bases"]]
        return {k: v for members in [*inherited, entry["members"]] for k, v in members.items()}

    def has(self, name: str) -> bool:
        return name in self.classes or name in self.module


def module_uses(tree: ast.AST) -> set[tuple[str, ...]]:
    """Attribute chains rooted at the tensorrt module (``trt.X``, ``trt.X.Y``; ``self.trt`` too)."""
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute) and ast.unparse(value) not in ROOTS:
                parts.insert(0, value.attr)
                value = value.value
            if ast.unparse(value) in ROOTS:
                chains.add(tuple(parts))
    return chains


def receiver_uses(scope: ast.AST, receivers: dict[str, str]) -> set[tuple[str, str, tuple[str, ...]]]:
    """(receiver, member, keyword names) for every attribute read or method called on a TensorRT receiver."""
    uses = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in receivers:
            call = getattr(node, "parent", None)
            keywords = tuple(k.arg for k in call.keywords) if isinstance(call, ast.Call) and call.func is node else ()
            uses.add((ast.unparse(node.value), node.attr, keywords))
    return uses


def from_tensorrt(value: ast.AST, receivers: dict[str, str]) -> bool:
    """Whether ``value`` is a call on the tensorrt module or on a receiver (its result a TensorRT object)."""
    if not isinstance(value, ast.Call):
        return False
    node = value.func
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        if ast.unparse(node) in (*ROOTS, *receivers):
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return ast.unparse(node) in (*ROOTS, *receivers)


def held_objects(scope: ast.AST, receivers: dict[str, str]) -> set[str]:
    """The names in ``scope`` assigned from a TensorRT call."""
    held = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and from_tensorrt(node.value, receivers):
            for target in node.targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                held |= {ast.unparse(element) for element in elements}
    return held


def parsed(path: Path) -> ast.AST:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node
    return tree


@pytest.fixture(params=RELEASES, ids=lambda path: path.stem)
def api(request) -> Api:
    return Api(request.param)


def test_the_vendor_records_cover_10_3_the_last_10x_and_11x():
    versions = [Api(path).version for path in RELEASES]
    assert {v.split(".")[0] for v in versions} == {"10", "11"} and "10.3.0" in versions, versions


@pytest.mark.parametrize("module", sorted(CALLERS))
def test_every_tensorrt_name_the_code_calls_is_bound(api, module):
    tree = parsed(Path(importlib.import_module(module).__file__))
    chains = module_uses(tree)
    assert chains, f"{module}: no trt.* use found; the scan no longer sees the code"
    for chain in chains:
        assert api.has(chain[0]), f"{module}: trt.{chain[0]} is not in TensorRT {api.version}"
        for depth, (owner, member) in enumerate(zip(chain, chain[1:]), start=1):
            assert depth == 1 and owner in api.classes, \
                f"{module}: trt.{'.'.join(chain)}: this test reads trt.Class.member, not deeper; extend it"
            assert member in api.members(owner), f"{module}: trt.{'.'.join(chain)} is not in TensorRT {api.version}"
    scope_name, receivers = CALLERS[module]
    scope = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == scope_name)
    unmapped = held_objects(scope, receivers) - set(receivers) - OPAQUE
    assert not unmapped, f"{module}: TensorRT objects held as {sorted(unmapped)}: add them to CALLERS or OPAQUE"
    read = {ast.unparse(n.value) for n in ast.walk(scope) if isinstance(n, ast.Attribute)} & OPAQUE
    assert not read, f"{module}: attributes read on {sorted(read)}: move them from OPAQUE to CALLERS"
    uses = receiver_uses(scope, receivers)
    assert {receiver for receiver, _, _ in uses} == set(receivers), "a receiver in CALLERS is no longer used"
    for receiver, member, keywords in uses:
        bound = api.members(receivers[receiver])
        assert member in bound, f"{module}: {receiver}.{member} is not in TensorRT {api.version}'s {receivers[receiver]}"
        unknown = set(keywords) - set(bound[member])
        assert not unknown, f"{module}: {receiver}.{member}() has no keyword {sorted(unknown)} in TensorRT {api.version}"


def test_every_name_the_stand_in_offers_is_bound(api):
    tree = parsed(Path(__file__).with_name("test_engine_build_logic.py"))
    fake = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "FakeTensorRT")
    classes = {n.name: n for n in ast.walk(fake) if isinstance(n, ast.ClassDef) and n is not fake}
    assert set(classes) == set(STAND_INS), "FakeTensorRT's classes changed: map them in STAND_INS"
    for name, node in classes.items():
        offered = {t.id for s in node.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}
        offered |= {s.name for s in node.body if isinstance(s, ast.FunctionDef) and s.name != "__init__"}
        missing = offered - set(api.members(STAND_INS[name]))
        assert not missing, f"FakeTensorRT.{name} offers {sorted(missing)}, not in TensorRT {api.version}'s {STAND_INS[name]}"
    namespace = next(n for n in ast.walk(fake) if isinstance(n, ast.Call) and ast.unparse(n.func) == "super().__init__")
    for keyword in namespace.keywords:
        if keyword.arg == "calls":  # the stand-in's own record, not TensorRT's
            continue
        assert api.has(keyword.arg), f"FakeTensorRT's trt.{keyword.arg} is not in TensorRT {api.version}"
        if isinstance(keyword.value, ast.Call) and ast.unparse(keyword.value.func) == "types.SimpleNamespace":
            for member in keyword.value.keywords:
                assert member.arg in api.members(keyword.arg), \
                    f"FakeTensorRT's trt.{keyword.arg}.{member.arg} is not in TensorRT {api.version}"
