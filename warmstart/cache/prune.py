"""Pruning the cache by count per app, total size and age; quarantined entries always go."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.errors import UsageError


@dataclass(frozen=True)
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    quarantine_removed: int = 0
    broken_removed: list[str] = field(default_factory=list)  # entries whose manifest does not validate
    dry_run: bool = False


def _age_seconds(snapshot: Snapshot, now: float) -> float:
    return now - datetime.fromisoformat(snapshot.manifest.created_at).timestamp()


def prune(
    store: SnapshotStore,
    *,
    keep: int | None = None,
    max_size: int | None = None,
    older_than: float | None = None,
    app: str | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Remove snapshots beyond the newest `keep` per app, older than `older_than` seconds, and then the oldest
    until the rest fits in `max_size` bytes. Criteria combine; at least one is required."""
    if keep is None and max_size is None and older_than is None:
        raise UsageError("prune needs at least one of --keep N, --max-size SIZE, --older-than DURATION")
    if keep is not None and keep < 0:
        raise UsageError("--keep must be 0 or more")
    now = time.time()
    snapshots = store.snapshots_of(app)  # newest first
    doomed: set[str] = set()
    per_app: dict[str, int] = {}
    for s in snapshots:
        per_app[s.manifest.app] = per_app.get(s.manifest.app, 0) + 1
        if keep is not None and per_app[s.manifest.app] > keep:
            doomed.add(s.ref)
        if older_than is not None and _age_seconds(s, now) > older_than:
            doomed.add(s.ref)
    if max_size is not None:
        total = 0
        for s in snapshots:
            if s.ref in doomed:
                continue
            total += s.size
            if total > max_size:
                doomed.add(s.ref)
    removed = [s for s in snapshots if s.ref in doomed]
    quarantined = store.quarantined()
    broken = store.broken(app)
    if not dry_run:
        for s in removed:
            store.remove(s)
        for q in quarantined:
            store.remove_dir(q)
        for b in broken:
            store.remove_dir(b)
    return PruneResult(
        removed=[s.ref for s in removed],
        kept=[s.ref for s in snapshots if s.ref not in doomed],
        freed_bytes=sum(s.size for s in removed),
        quarantine_removed=len(quarantined),
        broken_removed=[f"{b.parent.name}:{b.name}" for b in broken],
        dry_run=dry_run,
    )
