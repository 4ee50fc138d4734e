"""The JSON Schema files in ``schemas/json/`` are the contract; this module loads them and validates against them.

The files are language-neutral (Draft 2020-12) so a gateway or an analyst's job in any language can check what it
writes or reads; the Python codecs in :mod:`schemas.records` and :mod:`schemas.frame` validate through them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).parent / "json"


@cache
def validator(name: str) -> Draft202012Validator:
    """Validator for ``schemas/json/<name>.schema.json`` (checked against the metaschema on first load)."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks schema ``name``, as readable one-liners (empty when it conforms)."""
    out = []
    for error in sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        out.append(f"{where}: {error.message}")
    return out


def schema_names() -> list[str]:
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))
