import subprocess
from pathlib import Path

import pytest

from bench.model_bench import code_version

ROOT = Path(__file__).resolve().parents[2]


def test_code_version_names_the_checked_out_commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    version = code_version()
    assert version is not None and version["commit"] == head
    assert isinstance(version["uncommitted_changes"], bool)
