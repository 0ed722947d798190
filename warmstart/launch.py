"""Use case `run`: restore a NEW instance from the newest usable snapshot, or start the app cold and say why.

The fallback is the point: a missing, stale or broken snapshot must never leave the user without a running
service, unless they asked for restore-or-fail (`no_fallback`).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from warmstart import labels
from warmstart.cache.manifest import CHECKPOINT_FILE
from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.containers import probe_container, removed_on_failure
from warmstart.engines.base import ContainerState, Engine
from warmstart.hooks import after_restore_hooks, run_hooks
from warmstart.errors import (
    HookError,
    ImageNotFound,
    ReadinessError,
    RestoreError,
    SnapshotNotFound,
    UnknownAppError,
    UsageError,
)
from warmstart.spec import AppSpec, PortBinding

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LaunchResult:
    app: str
    mode: str  # "restored" or "cold"
    container: str  # container id
    name: str
    ready_seconds: float
    ports: dict[str, str]  # "8080/tcp" -> "127.0.0.1:41234"
    snapshot: str | None = None
    reason: str | None = None  # why cold


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind(("" if ip == "0.0.0.0" else ip, 0))
        return int(s.getsockname()[1])


def resolve_ports(spec: AppSpec, requested: list[PortBinding]) -> list[PortBinding]:
    """Every port the app publishes gets a binding: the user's, else a free loopback port. Free ports are chosen
    here rather than by the engine, so the instance's address is known without asking the engine afterwards."""
    by_port = {}
    for binding in requested:
        if binding.protocol == "tcp" and binding.container_port not in spec.ports:
            raise UsageError(
                f"-p {binding.container_port}: app {spec.name!r} publishes container ports {list(spec.ports) or 'none'}"
            )
        by_port[binding.key] = binding
    for port in spec.ports:
        by_port.setdefault(f"{port}/tcp", PortBinding(container_port=port))
    return [b if b.host_port else dataclasses.replace(b, host_port=_free_port(b.host_ip)) for b in by_port.values()]


def _started(container: str, name: str, bindings: list[PortBinding], restored: bool) -> ContainerState:
    """What we know of an instance we just started, without an engine round trip."""
    return ContainerState(id=container, name=name, status="running", running=True, exit_code=0, restored=restored,
                          ports={b.key: (b.host_ip, b.host_port) for b in bindings})


def usable_snapshot(spec: AppSpec, *, engine: Engine, store: SnapshotStore) -> tuple[Snapshot | None, str]:
    """The newest snapshot this host and engine can restore, or None and the reason there is none."""
    snapshot = store.latest(spec.name)
    if snapshot is None:
        return None, f"no snapshot of app {spec.name!r} in {store.root}"
    m = snapshot.manifest
    if m.engine.get("name") != engine.name:
        return None, f"snapshot {snapshot.id} was made with {m.engine.get('name')}, not {engine.name}"
    try:
        current = engine.image_id(image=spec.image)
    except ImageNotFound:
        return None, f"image {spec.image} of snapshot {snapshot.id} is no longer present"
    if current != m.image.get("id"):
        return None, f"image {spec.image} changed since snapshot {snapshot.id} was taken (rebuild it)"
    expected = m.files.get(CHECKPOINT_FILE, {}).get("size")
    try:
        actual = snapshot.checkpoint.stat().st_size
    except OSError:
        return None, f"snapshot {snapshot.id} has no {CHECKPOINT_FILE}"
    if expected != actual:
        return None, f"snapshot {snapshot.id} is damaged: {CHECKPOINT_FILE} is {actual} bytes, manifest says {expected}"
    return snapshot, ""


def launch(
    app: str,
    *,
    engine: Engine,
    store: SnapshotStore,
    ports: list[PortBinding],
    no_fallback: bool = False,
    cold: bool = False,
    spec: AppSpec | None = None,
    progress: Progress = lambda _: None,
) -> LaunchResult:
    """Start one instance of `app`; `spec` (from a spec file) overrides the one recorded by the last build."""
    if cold and no_fallback:
        raise UsageError("--cold and --no-fallback contradict each other")
    spec = spec or store.load_app(app)
    if spec is None:
        raise UnknownAppError(
            f"unknown app {app!r}: nothing was built under that name in {store.root}",
            hint=f"run `warmstart build --name {app} ...` first",
        )
    bindings = resolve_ports(spec, ports)
    start = time.monotonic()
    if cold:
        snapshot, reason = None, "cold start requested (--cold)"
    else:
        snapshot, reason = usable_snapshot(spec, engine=engine, store=store)
    if snapshot is None and no_fallback:
        raise SnapshotNotFound(f"cannot restore {app!r}: {reason} (and --no-fallback forbids a cold start)")
    if snapshot is not None:
        try:
            return _restore(spec, snapshot, engine=engine, bindings=bindings, start=start, progress=progress)
        except (RestoreError, ReadinessError, HookError) as exc:
            if no_fallback:
                raise RestoreError(
                    f"restore of {app!r} from snapshot {snapshot.id} failed (and --no-fallback forbids a cold start): {exc}",
                    details=exc.details,
                ) from exc
            reason = f"restore from snapshot {snapshot.id} failed: {exc}"
            progress(f"{reason}; starting cold")
    return _cold(spec, engine=engine, bindings=bindings, start=start, reason=reason, progress=progress)


def _restore(
    spec: AppSpec, snapshot: Snapshot, *, engine: Engine, bindings: list[PortBinding], start: float, progress: Progress
) -> LaunchResult:
    name = labels.instance_name(spec.name)
    progress(f"restoring {name} from snapshot {snapshot.id}")
    with removed_on_failure(engine, name):
        container = engine.restore(archive=snapshot.checkpoint, name=name, ports=bindings)
        state = _started(container, name, bindings, restored=True)
        run_hooks("after_restore", after_restore_hooks(spec), engine=engine, state=state)
        return _ready(spec, engine=engine, state=state, mode="restored", start=start, snapshot=snapshot.id)


def _cold(
    spec: AppSpec, *, engine: Engine, bindings: list[PortBinding], start: float, reason: str, progress: Progress
) -> LaunchResult:
    name = labels.instance_name(spec.name)
    progress(f"starting {name} cold: {reason}")
    with removed_on_failure(engine, name):
        container = engine.run(
            name=name, image=spec.image, command=list(spec.command), env=spec.env, ports=bindings,
            labels=labels.labels_for(spec.name), volumes=spec.volumes,
        )
        state = _started(container, name, bindings, restored=False)
        return _ready(spec, engine=engine, state=state, mode="cold", start=start, reason=reason)


def _ready(
    spec: AppSpec, *, engine: Engine, state: ContainerState, mode: str, start: float,
    snapshot: str | None = None, reason: str | None = None,
) -> LaunchResult:
    probe_container(engine, container=state.name, probe=spec.probe, known=state)
    ready_seconds = round(time.monotonic() - start, 3)
    ports = {key: f"{ip or '0.0.0.0'}:{port}" for key, (ip, port) in state.ports.items()}
    return LaunchResult(
        app=spec.name, mode=mode, container=state.id, name=state.name, ready_seconds=ready_seconds,
        ports=ports, snapshot=snapshot, reason=reason,
    )

