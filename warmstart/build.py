"""Use case `build`: start the app, wait until it is ready, checkpoint it, publish the snapshot to the cache.

Whatever happens (failure, timeout, Ctrl-C, SIGTERM) the build container is removed and nothing half-written
becomes visible in the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from warmstart import __version__, labels
from warmstart.cache.manifest import CHECKPOINT_FILE, Manifest
from warmstart.cache.store import Snapshot, SnapshotStore, new_snapshot_id
from warmstart.containers import probe_container, remove_quietly
from warmstart.engines.base import Engine
from warmstart.errors import UsageError
from warmstart.spec import AppSpec, PortBinding

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    app: str
    snapshot: str
    snapshot_path: str
    image: str
    image_id: str
    size_bytes: int
    build_seconds: float
    ready_seconds: float
    checkpoint_seconds: float


def build(spec: AppSpec, *, engine: Engine, store: SnapshotStore, progress: Progress = lambda _: None) -> BuildResult:
    if spec.probe is None:
        raise UsageError("build needs a readiness probe: --ready-http PATH or --ready-tcp PORT")
    start = time.monotonic()
    image_id = engine.image_id(image=spec.image)
    info = engine.info()
    name = labels.build_name(spec.name)
    try:
        progress(f"starting {spec.image} as {name}")
        t = time.monotonic()
        engine.run(
            name=name,
            image=spec.image,
            command=spec.command,
            env=spec.env,
            ports=[PortBinding(container_port=p) for p in spec.ports],
            labels=labels.labels_for(spec.name),
        )
        progress(f"waiting for {spec.probe.describe()}")
        probe_container(engine, container=name, probe=spec.probe)
        ready_seconds = time.monotonic() - t  # cold time-to-ready, recorded for comparison with restores
        with store.staging(spec.name) as stage:
            progress("checkpointing")
            t = time.monotonic()
            engine.checkpoint(container=name, dest=stage / CHECKPOINT_FILE)
            checkpoint_seconds = time.monotonic() - t
            manifest = Manifest(
                app=spec.name,
                snapshot_id=new_snapshot_id(),
                created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                warmstart_version=__version__,
                engine={"name": info.name, "version": info.version, "runtime": info.runtime,
                        "runtime_version": info.runtime_version},
                image={"ref": spec.image, "id": image_id},
                spec={**spec.to_dict(), "env": sorted(spec.env)},  # names only: values may be secrets
                timings={"ready_seconds": round(ready_seconds, 3), "checkpoint_seconds": round(checkpoint_seconds, 3)},
            )
            snapshot: Snapshot = store.publish(stage, manifest)
        store.save_app(spec)
    finally:
        remove_quietly(engine, name)
    return BuildResult(
        app=spec.name,
        snapshot=snapshot.id,
        snapshot_path=str(snapshot.path),
        image=spec.image,
        image_id=image_id,
        size_bytes=sum(f["size"] for f in manifest.files.values()),
        build_seconds=round(time.monotonic() - start, 3),
        ready_seconds=round(ready_seconds, 3),
        checkpoint_seconds=round(checkpoint_seconds, 3),
    )
