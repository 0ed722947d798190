"""The snapshot cache: the local store (store: staging, publish, verify, quarantine), the manifest's fixed shape
(manifest), the cache key (keys), pruning (prune), restore records (health), what a snapshot holds (contents), and
sharing through any OCI registry (registry). May import: errors, core, engines (their facts, for the key), security.

The names below are resolved on first use, so importing a submodule loads nothing else."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "warmstart.cache.manifest",
    "Manifest": "warmstart.cache.manifest",
    "Snapshot": "warmstart.cache.store",
    "SnapshotStore": "warmstart.cache.store",
    "default_cache_dir": "warmstart.core.layout",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'warmstart.cache' has no attribute {name!r}")
