"""The layering rule of docs/design.md, read from the source: core ← runtime ← training ← export/calibration ← app.

Import-graph tools cannot follow ``package_dir`` (four folders form one package), so this test is the
picture. It parses every module's imports: module level and inside functions alike (a lazy import is still a
dependency), and string imports (``importlib.import_module("x")``, ``__import__("x")``) too, then checks

* each import against the layer of the module that makes it,
* that the package graph has no cycle,
* what ``clipedge --help`` and ``clipedge predict`` actually load, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"toolkit": "clipedge", "export": "clipedge.export", "calibration": "clipedge.calibration",
           "runtime": "clipedge.runtime"}
HEAVY = ("torch", "torchvision", "open_clip")
#: layers, lowest first; a module may import its own layer and those below it, never one above
LAYERS = ("core", "runtime", "training", "export", "app")


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(module: str) -> str | None:
    """The layer of a clipedge module; None for anything outside clipedge."""
    if module in ("clipedge", "clipedge.version") or is_within(module, "clipedge.core"):
        return "core"
    if is_within(module, "clipedge.runtime"):
        return "runtime"
    if is_within(module, "clipedge.export") or is_within(module, "clipedge.calibration"):
        return "export"
    if is_within(module, "clipedge.cli"):
        return "app"
    if is_within(module, "clipedge"):
        return "training"
    return None


def string_imports(node: ast.AST) -> list[str]:
    """``import_module("a.b")`` / ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name."""
    if not isinstance(node, ast.Call) or not node.args:
        return []
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    first = node.args[0]
    if name in ("import_module", "__import__") and isinstance(first, ast.Constant) and isinstance(first.value, str):
        return [first.value]
    return []


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved, string imports included."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
        else:
            found.update(string_imports(node))
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))}


MODULES = all_modules()


def known(name: str) -> str | None:
    """``name`` as a clipedge module that exists (``pkg.module.Attribute`` → ``pkg.module``), else None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer_violations(modules: dict[str, Path]) -> list[str]:
    found = []
    for name, path in modules.items():
        own = LAYERS.index(layer_of(name))
        for target in sorted(imports_of(path)):
            if any(is_within(target, heavy) for heavy in HEAVY) and own <= LAYERS.index("runtime"):
                found.append(f"{path.relative_to(ROOT)} ({LAYERS[own]}) imports {target}")
            module = known(target)
            if module and LAYERS.index(layer_of(module)) > own:
                found.append(f"{path.relative_to(ROOT)} ({LAYERS[own]}) imports {module} ({layer_of(module)})")
    return found


def test_every_import_points_down_the_layers():
    """core and runtime import neither torch nor open_clip; no module imports a layer above its own."""
    assert layer_violations(MODULES) == []


def test_the_library_never_prints():
    """Only the CLI (clipedge.cli) talks to the terminal: no click and no print() below it."""
    talkers = []
    for name, path in MODULES.items():
        if layer_of(name) == "app":
            continue
        tree = ast.parse(path.read_text())
        if any(is_within(target, "click") for target in imports_of(path)):
            talkers.append(f"{path.relative_to(ROOT)} imports click")
        talkers += [f"{path.relative_to(ROOT)}:{node.lineno} calls print()" for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert talkers == []


def test_a_string_import_of_torch_from_the_runtime_is_caught(tmp_path):
    """The rule sees through ``import_module``: the trick runtime/bench once used to reach the torch pipeline."""
    path = ROOT / "runtime" / "bench" / "local.py"
    planted = path.read_text() + '\n\ndef _torch():\n    return importlib.import_module("clipedge.torch_pipeline")\n'
    original = imports_of
    try:
        globals()["imports_of"] = lambda p, s=None: original(p, planted if p == path else s)
        assert any("clipedge.torch_pipeline (training)" in v for v in layer_violations({module_name(path): path}))
    finally:
        globals()["imports_of"] = original


def package_of(module: str) -> str:
    """The package a module belongs to (a package stands for itself); the root's version module belongs to core."""
    if module in ("clipedge", "clipedge.version"):
        return "clipedge.core"
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        source = package_of(name)
        targets = {package_of(m) for m in map(known, imports_of(path)) if m}
        graph.setdefault(source, set()).update(t for t in targets if t != source and not is_within(source, t))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_graph_is_acyclic():
    assert find_cycle(package_graph()) is None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_runtime_owns_the_contract():
    """The model contract is defined once, in runtime/contract/; export and the tools import it from there."""
    definitions = {"INPUT_NAME", "OUTPUT_NAMES", "BatchProfile", "sidecar_path", "read_sidecar", "run_in_batches",
                   "parse_batch", "recorded_batch_profile", "ReferenceSet", "read_reference_set", "engine_fingerprint",
                   "foreign_engine_metadata", "LABELS_FILE", "DEFAULT_BATCH_PROFILE", "ModelContract", "read_contract",
                   "model_metadata_of"}
    owners: dict[str, list[str]] = {}
    for path in MODULES.values():
        for node in ast.parse(path.read_text()).body:
            names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                     [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else [])
            for name in set(names) & definitions:
                owners.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert all(len(paths) == 1 and paths[0].startswith("runtime/contract/") for paths in owners.values()), owners
    assert set(owners) == definitions


# --- what the commands load -----------------------------------------------------------------------------------

#: modules ``clipedge --help`` and ``clipedge predict`` must leave unloaded
NOT_LOADED = ("torch", "open_clip", "tensorrt", "tritonclient", "clipedge.runtime.triton", "clipedge.runtime.bench",
              "clipedge.runtime.tensorrt", "clipedge.export", "clipedge.training")

PROBE = """
import json, sys
from clipedge.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


def offenders(modules: list[str]) -> list[str]:
    return [m for m in modules if any(is_within(m, banned) for banned in NOT_LOADED)]


def test_clipedge_help_loads_no_command_module_and_nothing_heavy():
    modules = loaded_by("--help")
    assert offenders(modules) == []
    assert not [m for m in modules if is_within(m, "clipedge.cli") and m != "clipedge.cli"]


def plain_onnx_classifier(path: Path) -> Path:
    """A three-class ONNX classifier of uint8 [N, 8, 8, 3] frames (mean colour → logits), made with onnx's helpers."""
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], np.eye(3, dtype=np.float32).ravel().tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"])],
        "plain", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [weights, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_clipedge_predict_loads_neither_torch_nor_tensorrt_nor_triton(tmp_path):
    model = plain_onnx_classifier(tmp_path / "plain.onnx")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    modules = loaded_by("predict", str(model), str(tmp_path / "red.png"), "--labels", str(tmp_path / "labels.txt"))
    assert "onnxruntime" in modules and "clipedge.cli.predict" in modules  # it did run
    assert offenders(modules) == []


def test_the_probe_would_see_a_heavy_import():
    assert offenders(loaded_by("--version") + ["torch"]) == ["torch"]


@pytest.mark.parametrize("old, new", [("clipedge.errors", "clipedge.core.errors"), ("clipedge.images", "clipedge.core.images")])
def test_moved_paths_users_imported_still_work_for_a_release(old, new):
    """The examples imported these; the old path warns and gives the same objects."""
    import importlib
    import warnings

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shim = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    moved = importlib.import_module(new)
    public = [name for name in dir(moved) if not name.startswith("_") and getattr(getattr(moved, name), "__module__", None) == new]
    assert public and all(getattr(shim, name) is getattr(moved, name) for name in public)


def test_the_help_table_says_what_each_command_says():
    """``clipedge --help`` lists COMMANDS without importing them; each line must be its command's own summary."""
    import inspect

    from clipedge.cli import COMMANDS, load_command

    for name, (_, _, summary) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split()) == summary, name
