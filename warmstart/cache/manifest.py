"""The manifest stored beside each snapshot: a fixed JSON shape with a schema_version.

It records what the snapshot was made from and how, never secret values: environment variables appear by name
only (the checkpoint itself holds process memory and is protected by file modes instead).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from warmstart.errors import ManifestError

FILENAME = "manifest.json"
CHECKPOINT_FILE = "checkpoint.tar"  # the engine's checkpoint archive (podman `checkpoint --export`, uncompressed)
SCHEMA_VERSION = 1


class FileEntry(TypedDict):
    size: int
    sha256: str


@dataclass
class Manifest:
    app: str
    tag: str  # the snapshot's name within the app (default: the key's first 12 hex digits)
    key: str  # cache key: sha256 of key_inputs
    created_at: str  # ISO 8601, UTC
    warmstart_version: str
    engine: dict[str, str]  # name, version, runtime, runtime_version
    image: dict[str, str]  # ref, id
    spec: dict[str, Any]  # the AppSpec with env reduced to names
    host: dict[str, Any] = field(default_factory=dict)  # HostFacts of the machine that made it
    key_inputs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)  # every stored file but this one
    timings: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def ref(self) -> str:
        return f"{self.app}:{self.tag}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read snapshot manifest {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ManifestError(f"snapshot manifest {path} is not a JSON object")
        version = raw.get("schema_version")
        if not isinstance(version, int):
            raise ManifestError(f"snapshot manifest {path} has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise ManifestError(
                f"snapshot manifest {path} has schema_version {version}, newer than this warmstart reads "
                f"({SCHEMA_VERSION})",
                hint="upgrade warmstart, or rebuild the snapshot with this version",
            )
        try:
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except TypeError as exc:
            raise ManifestError(f"snapshot manifest {path} is missing fields: {exc}") from exc
