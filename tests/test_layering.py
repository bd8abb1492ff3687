"""The dependency rules of DESIGN.md §2, read from the source: runtime ← export ← toolkit, calibration beside export.

Import-graph tools cannot follow ``package_dir`` (four folders form one package), so this test is the
picture: it parses every module's imports (module level and inside functions alike, since a lazy import
is still a dependency) and checks each against the rules of the folder it lives in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"toolkit": "clipedge", "export": "clipedge.export", "calibration": "clipedge.calibration",
           "runtime": "clipedge.runtime"}
#: toolkit modules that import neither torch nor open_clip (nor anything that does): the runtime may use them
TORCH_FREE_TOOLKIT = {"clipedge", "clipedge.errors", "clipedge.version", "clipedge.tables", "clipedge.images",
                      "clipedge.atomic"}
HEAVY = ("torch", "torchvision", "open_clip")


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
    return found


def modules_in(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def violations(folder: str, forbidden) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for path in modules_in(folder)
            for name in sorted(imports_of(path)) if forbidden(name)]


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_runtime_is_the_bottom_layer():
    """No torch, no open_clip, nothing from export/calibration, and only torch-free parts of the toolkit."""

    def forbidden(name: str) -> bool:
        if any(is_within(name, heavy) for heavy in HEAVY):
            return True
        if is_within(name, "clipedge.export") or is_within(name, "clipedge.calibration"):
            return True
        if is_within(name, "clipedge.runtime"):
            return False
        if is_within(name, "clipedge"):
            top = ".".join(name.split(".")[:2])
            return top not in TORCH_FREE_TOOLKIT and name not in TORCH_FREE_TOOLKIT
        return False

    assert violations("runtime", forbidden) == []


@pytest.mark.parametrize("folder", ["export", "calibration"])
def test_export_and_calibration_do_not_reach_into_training(folder):
    assert violations(folder, lambda name: is_within(name, "clipedge.training")) == []


def test_runtime_owns_the_contract():
    """Names, sidecar, batch profile and the ORT TensorRT options are defined once, in runtime/contract.py."""
    definitions = {"INPUT_NAME", "OUTPUT_NAMES", "BatchProfile", "sidecar_path", "read_sidecar",
                   "tensorrt_provider_options", "run_in_batches", "parse_batch", "recorded_batch_profile",
                   "ReferenceSet", "read_reference_set", "engine_fingerprint", "foreign_engine_metadata"}
    owners: dict[str, list[str]] = {}
    for folder in FOLDERS:
        for path in modules_in(folder):
            for node in ast.parse(path.read_text()).body:
                names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                         [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else [])
                for name in set(names) & definitions:
                    owners.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert owners == {name: ["runtime/contract.py"] for name in definitions}


def test_the_torch_free_toolkit_modules_really_are():
    for name in TORCH_FREE_TOOLKIT - {"clipedge"}:
        path = ROOT / "toolkit" / (name.split(".", 1)[1] + ".py")
        heavy = [n for n in imports_of(path) if any(is_within(n, h) for h in HEAVY)]
        assert heavy == [], path
