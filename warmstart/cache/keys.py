"""The cache key: a digest of everything that changes what a snapshot contains.

Secret values never enter the key material (it is stored in manifests): a secret variable contributes its name
only, so rotating a secret does not by itself invalidate snapshots (rebuild with --force to re-snapshot).
Non-secret values enter as short digests, so the manifest shows that a value changed without showing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from warmstart.core.spec import AppSpec
from warmstart.engines.base import EngineInfo

FORMAT_VERSION = 1  # warmstart's snapshot format; bump when the layout of what is stored changes


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def key_inputs(spec: AppSpec, *, image_id: str, engine: EngineInfo, criu_version: str) -> dict[str, Any]:
    def plain(obj: Any) -> Any:
        is_instance = dataclasses.is_dataclass(obj) and not isinstance(obj, type)
        return json.loads(json.dumps(dataclasses.asdict(obj) if is_instance else obj))

    return {
        "format": FORMAT_VERSION,
        "image_id": image_id,
        "command": list(spec.command),
        "env": {k: _digest(v) for k, v in sorted(spec.env.items()) if k not in spec.secret_env},
        "secret_env": sorted(spec.secret_env),  # names only
        "secrets_during_warmup": spec.secrets_during_warmup,
        "ports": list(spec.ports),
        "volumes": list(spec.volumes),
        "warmup": plain(spec.warmup),
        "before_checkpoint": [plain(h) for h in spec.before_checkpoint],
        "after_restore": [plain(h) for h in spec.after_restore],
        "trim": plain(spec.trim),
        "python_helper": spec.python_helper,
        "jvm_helper": spec.jvm_helper,
        "uniqueness": spec.uniqueness,  # a gated snapshot is not an ungated one
        "engine": f"{engine.name} {engine.version}",
        "runtime": f"{engine.runtime} {engine.runtime_version}",
        "criu": criu_version,
    }


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
