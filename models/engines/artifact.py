"""Self-describing model artifacts: a directory with the engine's files, the FP32 source checkpoint and
``artifact.json`` (classes, input size, normalization, calibration fingerprint, accuracy, file hashes).

Loading verifies every file hash, so a truncated copy or a file from another artifact is refused by name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.engines.base import EngineError

FORMAT = "defectstream.artifact/1"
META_FILE = "artifact.json"
CHECKPOINT_FILE = "checkpoint.pt"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ArtifactMeta:
    engine: str  # which engine serves model.xml & co, e.g. "openvino-int8"
    class_names: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    version: str
    backbone: str
    source_checkpoint_sha256: str
    calibration: dict[str, Any]
    accuracy: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    code_version: str = "unknown"
    format: str = FORMAT


def write_meta(directory: Path, meta: ArtifactMeta) -> None:
    meta.files = {p.name: sha256_file(p) for p in sorted(Path(directory).iterdir()) if p.name != META_FILE}
    (Path(directory) / META_FILE).write_text(json.dumps(asdict(meta), indent=2))


def read_meta(directory: Path, verify: bool = True) -> ArtifactMeta:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise EngineError(f"{directory} is not a model artifact: no {META_FILE}")
    try:
        meta = ArtifactMeta(**json.loads(meta_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{meta_path} is not valid artifact metadata: {exc}") from None
    if meta.format != FORMAT:
        raise EngineError(f"{directory}: artifact format {meta.format!r}, this code reads {FORMAT!r}")
    if verify:
        for name, expected in meta.files.items():
            path = directory / name
            if not path.is_file():
                raise EngineError(f"artifact {directory} is incomplete: {name} is missing")
            if sha256_file(path) != expected:
                raise EngineError(
                    f"artifact {directory} is corrupt or mixed: {name} does not match its recorded sha256"
                )
    return meta
