"""The snapshot cache: a local directory today (the embedded default); registries come on top of it.

The names below are resolved on first use, so importing a light submodule (layout, safefs) loads nothing else:
`run`'s early start needs them before the store is imported (see warmstart.early)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "warmstart.cache.manifest",
    "Manifest": "warmstart.cache.manifest",
    "Snapshot": "warmstart.cache.store",
    "SnapshotStore": "warmstart.cache.store",
    "default_cache_dir": "warmstart.cache.layout",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'warmstart.cache' has no attribute {name!r}")
