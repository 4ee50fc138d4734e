"""The images: hadolint on every Dockerfile, the run-time rules it cannot see, and what the slim images must carry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.checks import ROOT

DOCKER = ROOT / "deploy/docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# Imported in this venv only because they happen to be installed; each importer works without them.
OPTIONAL_IMPORTS = {
    "idna": "jsonschema's format checker uses it when present (try/except ImportError)",
    "pydot": "torch.fx imports it when present, for graph drawing",
    "setuptools": "_distutils_hack, loaded at interpreter start by the venv's distutils-precedence.pth",
}


def test_there_are_worker_and_edge_dockerfiles():
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "edge.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(hadolint, dockerfile):
    # No ignores and the default failure threshold: any finding, style included, fails.
    proc = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_can_fail(hadolint, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python -m streams.cli worker\n")
    proc = subprocess.run([str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


def _final_stage_lines(text: str, target: str) -> list[str]:
    """Instructions that reach `target`: its own stage and the stages it is built FROM, in order."""
    stages: dict[str, tuple[str, list[str]]] = {}
    current = None
    for raw in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I):
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = (m.group(1), [])
        elif current:
            stages[current][1].append(line)
    chain, name = [], target
    while name in stages:
        base, lines = stages[name]
        chain = lines + chain
        name = base
    return chain


@pytest.mark.parametrize(
    ("dockerfile", "target"),
    [("worker.Dockerfile", "worker-cpu"), ("worker.Dockerfile", "worker-cuda"), ("edge.Dockerfile", "edge")],
)
def test_images_run_as_non_root_and_build_nothing_at_start(dockerfile, target):
    lines = _final_stage_lines((DOCKER / dockerfile).read_text(), target)
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    entrypoint = [line for line in lines if line.startswith("ENTRYPOINT ")][-1]
    # Exec form, straight into the installed console script: no shell wrapper that could pip install or compile.
    assert json.loads(entrypoint.split(None, 1)[1]) == ["defectstream"]
    healthcheck = [line for line in lines if line.startswith("HEALTHCHECK ")]
    if target.startswith("worker"):
        assert healthcheck and "healthcheck.py" in healthcheck[-1]
        assert "ENV" in " ".join(lines) and any("DEFECTSTREAM_MODEL_PATH=/models/current" in line for line in lines)


def test_bases_are_pinned():
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        for image in re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M):
            assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image


def test_healthcheck_script_probes_healthz(tmp_path):
    # Run it against nothing: it must fail (exit 1), not hang or pass.
    env = {"DEFECTSTREAM_WEB_PORT": "9", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, capture_output=True, timeout=30)
    assert proc.returncode == 1 and b"healthz on port 9" in proc.stderr


def _requirements(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def _with_dependencies(names: set[str]) -> set[str]:
    """The distributions pip would install for `names`: the requirements plus their dependencies, recursively."""
    env = {**default_environment(), "extra": ""}
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return seen


def _imported_distributions(modules: list[str]) -> tuple[set[str], set[str]]:
    """Import the entry points in a fresh interpreter; return (top-level modules, their distributions)."""
    code = (
        "import json, sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    top = set(json.loads(proc.stdout))
    owners = metadata.packages_distributions()
    project = {"streams", "models", "schemas"}
    dists = {
        canonicalize_name(owners[m][0])
        for m in top - project - set(sys.stdlib_module_names)
        if m in owners and canonicalize_name(owners[m][0]) != "defectstream"
    }
    return top, dists - set(OPTIONAL_IMPORTS)


def test_edge_image_carries_what_the_edge_clients_import_and_no_torch():
    modules = ["streams.cli", "streams.camera", "streams.sources", "streams.gate", "streams.dataset_sink"]
    modules += ["streams.kafka.topics"]  # `defectstream topics create` (the topic-init service and Job)
    top, dists = _imported_distributions(modules)
    assert not top & {"torch", "torchvision", "faust", "openvino"}
    missing = dists - _with_dependencies(_requirements(DOCKER / "requirements-edge.txt"))
    assert missing == set(), f"imported by the edge clients but not installed in the edge image: {missing}"


def test_worker_image_carries_what_the_worker_imports():
    modules = ["streams.cli", "streams.worker.app", "models.engines.torch_engine", "models.engines.openvino_engine"]
    modules += ["openvino"]  # the OpenVINO engine imports it when it loads an artifact
    _, dists = _imported_distributions(modules)
    installed = _requirements(DOCKER / "requirements-worker.txt") | {"torch", "torchvision"}
    dockerfile = (DOCKER / "worker.Dockerfile").read_text()
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in dockerfile
    missing = dists - _with_dependencies(installed)
    assert missing == set(), f"imported by the worker but not installed in the worker image: {missing}"
