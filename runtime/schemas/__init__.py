"""JSON Schemas of everything clipedge writes for other programs: ``eval --json``, ``bench --json``,
``predict --json``, ``calibrate --json``, the run manifest, the engine sidecar and the ONNX metadata.

They ship with the package (torch-free data) so a consumer can validate what it reads, and the test suite
validates every JSON the CLI prints against them. Each document carries a ``schema_version`` (the run
manifest: its ``format_version``); a breaking change to a schema bumps it. Required keys are the contract;
additional keys may appear in later minor releases.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

#: schema name -> the schema_version the current writers emit
SCHEMA_VERSIONS = {"eval": 1, "bench": 1, "predict": 2, "calibrate": 2, "manifest": 1, "sidecar": 1, "onnx_metadata": 1,
                   "class_bank": 1}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) named ``name`` (a key of SCHEMA_VERSIONS)."""
    if name not in SCHEMA_VERSIONS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMA_VERSIONS)}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8"))
