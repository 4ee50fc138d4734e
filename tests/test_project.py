"""Project-wide rules that code review would otherwise have to remember."""

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("models", {"streams"}), ("schemas", {"streams", "models"})])
def test_imports_flow_one_way(package, forbidden):
    assert not (_imports(package) & forbidden)


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [Settings.env_name(f.name) for f in fields(Settings) if f"`{Settings.env_name(f.name)}`" not in readme]
    assert missing == []
