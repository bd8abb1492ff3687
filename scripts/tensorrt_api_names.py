"""Record the names TensorRT's Python API binds, read from NVIDIA's own sources, for tests that cannot import it.

TensorRT cannot be installed where clipedge's CI runs, so the code that calls it is checked against what NVIDIA
publishes instead: the pybind11 bindings in a checkout of NVIDIA/TensorRT (``python/src/**/*.cpp``: every
``py::class_`` and ``py::enum_`` with its ``.def``, property and ``.value`` names and their keyword arguments, and
the ``m.def``/``m.attr`` module names) and the functions of the package's own ``__init__.py``
(``python/packaging/bindings_wheel/tensorrt/__init__.py``: ``nptype`` and the like). One JSON per release branch,
names only, no code (tests/vendor/tensorrt_api/). Not recorded: what that ``__init__.py`` attaches to bound classes
at import (``DataType.itemsize``, ``__enter__``), ``py::bind_vector`` containers and constructor keywords; a use of
one fails the test until the recorder learns it, never the other way round.

Run: python scripts/tensorrt_api_names.py GIT_DIR release/10.3 release/10.16 release/11.1 --out tests/vendor/tensorrt_api
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

BINDING = re.compile(r'py::(class_|enum_)<(?P<types>[^;{(]*?)>\s*(?P<var>\w+)?\s*[({]\s*(?P<scope>\w+)\s*,\s*"(?P<name>\w+)"')
MEMBER = re.compile(r'\.(def|def_static|def_(?:property|readwrite|readonly)(?:_readonly)?(?:_static)?|value)\s*\(\s*"(\w+)"')
LATER = re.compile(r'\b(?P<var>\w+)\s*(?=\.\s*def\w*\s*\()')
KEYWORD = re.compile(r'"(\w+)"_a|py::arg\(\s*"(\w+)"')
PACKAGE = "python/packaging/bindings_wheel/tensorrt/__init__.py"


def git_show(git_dir: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{ref}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def statement_end(text: str, start: int) -> int:
    """Index of the ``;`` that ends the statement at ``start``, skipping literals, comments and nested brackets."""
    depth, index = 0, start
    while index < len(text):
        char = text[index]
        if char in "\"'":  # a string or character literal, escapes included
            index += 1
            while text[index] != char:
                index += 2 if text[index] == "\\" else 1
        elif text.startswith("//", index):
            index = text.index("\n", index)
        elif text.startswith("/*", index):
            index = text.index("*/", index) + 1
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == ";" and depth <= 0:
            return index
        index += 1
    return index


def members_of(chain: str) -> dict[str, list[str]]:
    """``{member: keyword names}`` of one chain of ``.def(...)`` / ``.value(...)`` calls."""
    found = list(MEMBER.finditer(chain))
    members: dict[str, list[str]] = {}
    for number, match in enumerate(found):
        end = found[number + 1].start() if number + 1 < len(found) else len(chain)
        keywords = [a or b for a, b in KEYWORD.findall(chain[match.end():end])]
        members.setdefault(match.group(2), [])
        members[match.group(2)] = sorted(set(members[match.group(2)]) | set(keywords))
    return members


def bindings(sources: list[str]) -> dict[str, dict]:
    """``{python name: {"bases": [...], "members": {name: keywords}}}`` of every class and enum bound."""
    classes: dict[str, dict] = {}
    cpp_names: dict[str, str] = {}
    variables: dict[str, str] = {}
    pending: list[tuple[str, list[str]]] = []
    for text in sources:
        for match in BINDING.finditer(text):
            name, kind = match.group("name"), match.group(1)
            types = [t.strip() for t in match.group("types").split(",")]
            cpp_names[types[0].split("::")[-1]] = name
            chain = text[match.end():statement_end(text, match.end())]
            entry = classes.setdefault(name, {"bases": [], "members": {}})
            entry["members"].update(members_of(chain))
            pending.append((name, types[1:]))
            if match.group("var"):
                variables[match.group("var")] = name
            scope = match.group("scope")
            if scope != "m":
                pending.append((scope, []))
                classes.setdefault(f"@{scope}", {"bases": [], "members": {}})["members"][name] = []
                if kind == "enum_" and ".export_values()" in chain:
                    classes[f"@{scope}"]["members"].update(members_of(chain))
        for match in LATER.finditer(text):
            if match.group("var") in variables:
                chain = text[match.end():statement_end(text, match.end())]
                classes[variables[match.group("var")]]["members"].update(members_of(chain))
    for scope, _ in pending:  # members attached through a class's variable (nested enums and their values)
        if f"@{scope}" in classes and scope in variables:
            classes[variables[scope]]["members"].update(classes.pop(f"@{scope}")["members"])
    for name, bases in pending:
        if name in classes:
            known = [cpp_names[b.split("::")[-1]] for b in bases if b.split("::")[-1] in cpp_names]
            classes[name]["bases"] = sorted(set(classes[name]["bases"]) | set(known))
    return {name: {"bases": entry["bases"], "members": dict(sorted(entry["members"].items()))}
            for name, entry in sorted(classes.items()) if not name.startswith("@")}


def module_functions(sources: list[str], package: str) -> list[str]:
    bound = {m.group(1) for text in sources for m in re.finditer(r'\bm\.(?:def|attr)\s*\(\s*"(\w+)"', text)}
    python = set(re.findall(r"^def (\w+)\(", package, re.MULTILINE)) | {"__version__"}
    return sorted(name for name in bound | python if not name.startswith("_") or name == "__version__")


def record(git_dir: Path, ref: str) -> dict:
    commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    listing = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", commit, "python/src"],
                             check=True, capture_output=True, text=True).stdout.split()
    files = sorted(f for f in listing if f.endswith(".cpp"))
    sources = [git_show(git_dir, commit, f) for f in files]
    version = git_show(git_dir, commit, "include/NvInferVersion.h")
    numbers = [re.search(rf"#define (?:TRT|NV_TENSORRT)_{part}(?:_ENTERPRISE)? (\d+)", version).group(1)
               for part in ("MAJOR", "MINOR", "PATCH")]
    return {"source": "github.com/NVIDIA/TensorRT", "ref": ref, "commit": commit, "version": ".".join(numbers),
            "files": [*files, PACKAGE], "module": module_functions(sources, git_show(git_dir, commit, PACKAGE)),
            "classes": bindings(sources)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("refs", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for ref in args.refs:
        recorded = record(args.git_dir, ref)
        target = args.out / f"tensorrt-{recorded['version']}.json"
        target.write_text(json.dumps(recorded, indent=1) + "\n")
        print(f"{ref} ({recorded['commit'][:12]}): TensorRT {recorded['version']}, {len(recorded['classes'])} "
              f"classes and enums, {len(recorded['module'])} module names -> {target}")


if __name__ == "__main__":
    main()
