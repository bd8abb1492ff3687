"""The class bank's manifest checked against its shipped JSON Schema, without the jsonschema package.

The runtime install has no jsonschema (numpy, pillow, onnxruntime, click and the tokenizer's two packages), yet a
device must refuse a bank whose manifest does not follow ``class_bank.schema.json``. The schema is the single
source of truth: this module interprets the small part of draft 2020-12 that schema uses (type, const, enum,
required, properties, items, minItems, minimum, exclusiveMinimum, minLength, pattern) and names the first field
that breaks it; the test suite checks the same documents with jsonschema itself.
"""

from __future__ import annotations

import re
from typing import Any

from clipedge.runtime.schemas import load_schema

SCHEMA_NAME = "class_bank"

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
}


def _problem(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """Why ``value`` breaks ``schema`` (``where`` names it), or None."""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[name](value) for name in allowed):
            return f"{where}: expected {' or '.join(allowed)}, got {type(value).__name__}"
    if "const" in schema and value != schema["const"]:
        return f"{where}: expected {schema['const']!r}, got {value!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: expected one of {', '.join(map(repr, schema['enum']))}, got {value!r}"
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}: expected at least {schema['minimum']}, got {value}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{where}: expected more than {schema['exclusiveMinimum']}, got {value}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where}: expected a non-empty string"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{where}: {value!r} does not match {schema['pattern']}"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{where}: expected at least {schema['minItems']} entries, got {len(value)}"
        for index, item in enumerate(value):
            problem = _problem(item, schema.get("items", {}), f"{where}[{index}]")
            if problem:
                return problem
    if isinstance(value, dict):
        missing = [key for key in schema.get("required", []) if key not in value]
        if missing:
            return f"{where}: lacks {', '.join(missing)}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problem = _problem(value[key], sub, f"{where}.{key}" if where else key)
                if problem:
                    return problem
    return None


def manifest_problem(manifest: Any) -> str | None:
    """The first way ``manifest`` breaks the shipped class-bank schema, as a phrase naming the field, or None."""
    return _problem(manifest, load_schema(SCHEMA_NAME), "manifest")
