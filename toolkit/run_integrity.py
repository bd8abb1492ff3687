"""A run directory is verified, not trusted: its manifest against the shipped schema, its head against the manifest.

A hand-edited, damaged or mixed-up run (a ``head.safetensors`` copied in from another run) used to surface as an
``IndexError`` deep in eval, a ``TypeError`` in export, or, worst, nothing at all: a head with another class count
exported, passed parity against itself, and replaced a good model with one the runtime refuses. Each of these is
now one line naming the file and the entry, raised when the run is loaded, before any work is done with it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import torch

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.schemas import load_schema

from .heads import Head


@cache
def _manifest_validator() -> Any:
    """Draft 2020-12, except that "integer" means what clipedge writes (``2``): JSON Schema also counts ``2.0``,
    which Python then refuses as a count (``range(2.0)``) deep inside eval."""
    schema = load_schema("manifest")
    base = jsonschema.validators.validator_for(schema)
    exact = base.TYPE_CHECKER.redefine("integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=exact)(schema)


def check_against_schema(path: Path, manifest: dict[str, Any]) -> None:
    """The shipped schema (runtime/schemas/manifest.schema.json), types included, before any value is used."""
    error = jsonschema.exceptions.best_match(_manifest_validator().iter_errors(manifest))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "top level"
        raise ClipedgeError(f"RUN {path}: manifest entry {where} does not match the manifest schema: {error.message}")


def tensor_shapes(head: Head) -> dict[str, list[int]]:
    """What the manifest records of ``head.safetensors``: every tensor's shape."""
    return {name: list(tensor.shape) for name, tensor in head.state_dict().items()}


def check_recorded_shapes(head_path: Path, tensors: dict[str, torch.Tensor], recorded: dict[str, list[int]] | None) -> None:
    """The head's tensors against the shapes the manifest recorded when the run was written (runs written before
    the manifest recorded them are checked by :func:`check_head_fits` alone)."""
    if recorded is None:
        return
    if set(tensors) != set(recorded):
        raise ClipedgeError(f"RUN {head_path}: head tensors {sorted(tensors)} differ from the manifest's "
                            f"{sorted(recorded)}; this head belongs to another run")
    for name, shape in sorted(recorded.items()):
        if list(tensors[name].shape) != shape:
            raise ClipedgeError(f"RUN {head_path}: head tensor {name} has shape {list(tensors[name].shape)} but the "
                                f"manifest records {shape}; this head belongs to another run")


@torch.no_grad()
def check_head_fits(head_path: Path, head: Head, manifest: dict[str, Any]) -> None:
    """The head takes the backbone's features and gives one score per class the manifest names."""
    dim, classes = manifest["backbone"]["embed_dim"], len(manifest["class_names"])
    try:
        outputs = tuple(head(torch.zeros(1, dim)).shape)
    except RuntimeError as error:
        raise ClipedgeError(f"RUN {head_path}: the head does not take the backbone's {dim}-dimensional features "
                            f"({str(error).splitlines()[0]}); this head belongs to another run") from None
    if outputs != (1, classes):
        raise ClipedgeError(f"RUN {head_path}: the head outputs {outputs[-1]} classes but the manifest names {classes} "
                            "(class_names); this head belongs to another run")
