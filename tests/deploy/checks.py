"""Checks shared by the deployment tests: which environment variables are settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def setting_env_names() -> set[str]:
    return {Settings.env_name(f.name) for f in fields(Settings)}


def unknown_settings(names: Iterable[str]) -> list[str]:
    """Names that no Settings field reads: a typo or a removed setting silently does nothing in a container."""
    return sorted(set(names) - setting_env_names())


def env_file_keys(path: Path) -> list[str]:
    """Keys of a KEY=value file (comments and blank lines skipped), as compose and kustomize read it."""
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line.split("=", 1)[0].strip())
    return keys
