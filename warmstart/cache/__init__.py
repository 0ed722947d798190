"""The snapshot cache: a local directory today (the embedded default); registries come on top of it."""

from warmstart.cache.manifest import SCHEMA_VERSION, Manifest
from warmstart.cache.store import Snapshot, SnapshotStore, default_cache_dir

__all__ = ["SCHEMA_VERSION", "Manifest", "Snapshot", "SnapshotStore", "default_cache_dir"]
