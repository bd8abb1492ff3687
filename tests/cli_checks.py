"""What every bad-input test asserts, and schema validation of the JSON documents clipedge writes."""

from __future__ import annotations

from pathlib import Path

import jsonschema
from click.testing import CliRunner
from referencing import Registry, Resource

from clipedge.cli import main
from clipedge.runtime.schemas import SCHEMA_VERSIONS, load_schema


def fails_cleanly(args: list, expected: str, tmp_path: Path | None = None) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    assert expected in errors[0], errors[0]
    if tmp_path is not None:
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")], "staging left behind"
        assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    return errors[0]


REGISTRY = Registry().with_resources(
    (load_schema(name)["$id"], Resource.from_contents(load_schema(name))) for name in SCHEMA_VERSIONS)


def validate(document: dict, name: str) -> None:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(document)
