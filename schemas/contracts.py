"""The JSON Schema files in ``schemas/json/`` are the contract; this module loads them and validates against them.

The files are language-neutral (Draft 2020-12) so a gateway or an analyst's job in any language can check what it
writes or reads; the Python codecs in :mod:`schemas.records` and :mod:`schemas.frame` validate through them.
Validation runs on every record a worker, gate or sink reads, so it uses jsonschema-rs (compiled, ~2 us per
inspection result instead of ~140 us with the pure-Python ``jsonschema``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

SCHEMA_DIR = Path(__file__).parent / "json"


@cache
def validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """Validator for ``schemas/json/<name>.schema.json``. jsonschema-rs checks the schema against the Draft 2020-12
    metaschema when it builds the validator: a broken schema file raises ``jsonschema_rs.ValidationError``."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema_rs.Draft202012Validator(schema)


def errors(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks schema ``name``, as readable one-liners (empty when it conforms). Never raises
    for a document: one the validator cannot walk (nested beyond its recursion limit, keys that are not valid
    UTF-8) is reported as a problem like any other, so a reader dead-letters it instead of dying on it."""
    check = validator(name)
    try:
        if check.is_valid(document):  # the common case, without building error objects
            return []
        found = list(check.iter_errors(document))
    except (ValueError, UnicodeError, OverflowError, RecursionError) as exc:
        return [f"(root): cannot be validated: {exc}"]
    out = []
    # Numeric path parts (array indexes) sort as numbers, names as text.
    for error in sorted(found, key=lambda e: [(isinstance(p, str), p) for p in e.instance_path]):
        where = "/".join(str(p) for p in error.instance_path) or "(root)"
        out.append(f"{where}: {error.message}")
    return out


@cache
def _property_validator(name: str, prop: str) -> jsonschema_rs.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema_rs.Draft202012Validator(schema["properties"][prop])


def property_is_valid(name: str, prop: str, value: Any) -> bool:
    """Whether ``value`` is what schema ``name`` allows for property ``prop`` (alone, as in a document missing
    other required properties)."""
    try:
        return _property_validator(name, prop).is_valid(value)
    except (ValueError, UnicodeError, OverflowError, RecursionError):
        return False


def schema_names() -> list[str]:
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))
