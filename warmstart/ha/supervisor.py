"""Use case `run --restart on-failure [--checkpoint-every DURATION --keep N]`: an instance that checkpoints itself
while it serves and comes back by itself when it dies.

`run` stays in the foreground as the instance's supervisor (as `serve` does for its front): every
`checkpoint_every` seconds it checkpoints the instance, which keeps running (the freeze CRIU needs, and the whole
checkpoint, are reported), keeping the newest `keep`; every `interval` it asks the engine whether the container
runs and probes the app once. When the container has stopped, or the probe failed `health_retries` times in a row,
the instance is recovered in place, with the same name and host ports: from its newest checkpoint that passes
verification (a checkpoint that fails it is never restored: the launch quarantines it and the next older one is
tried), else from the build's snapshot, else cold. Every step is an event (`emit`), counted.

Interrupting the supervisor (Ctrl-C, SIGTERM) ends supervision only: the instance runs on, unsupervised, and its
checkpoints stay in the cache (`cache ls`).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec, PortBinding, parse_port_binding
from warmstart.engines.base import Engine
from warmstart.errors import UsageError, WarmstartError
from warmstart.restore.launch import LaunchResult, known_app, launch
from warmstart.runtime.containers import published, remove_quietly
from warmstart.runtime.probes import NotReady, make_check
from warmstart.snapshot.checkpoint import checkpoint_instance

Event = dict[str, Any]


@dataclass(frozen=True)
class HaOptions:
    checkpoint_every: float | None = None  # seconds between checkpoints; None: recover from the build's snapshot
    keep: int = 3  # checkpoints of this instance kept (older ones are removed)
    health_retries: int = 3  # failed probes in a row that count as a failure
    interval: float = 1.0  # seconds between health checks

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise UsageError("--keep must be at least 1")
        if self.health_retries < 1:
            raise UsageError("--health-retries must be at least 1")


@dataclass
class Supervised:
    """What the supervisor knows of its instance and has done."""

    launched: LaunchResult
    checkpoints: list[str] = field(default_factory=list)  # APP:TAG of this instance's, oldest first
    restarts: int = 0
    failures: int = 0  # failed probes in a row
    taken: int = 0  # checkpoints taken


def supervise(launched: LaunchResult, *, engine: Engine, store: SnapshotStore, spec: AppSpec | None, opts: HaOptions,
              emit: Callable[[Event], None], labels: dict[str, str] | None = None,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Supervised:
    """Supervise `launched` until interrupted (KeyboardInterrupt); returns what was done."""
    state = Supervised(launched)
    spec = known_app(launched.app, store=store, spec=spec).spec
    next_checkpoint = clock() + opts.checkpoint_every if opts.checkpoint_every else None
    emit({"event": "supervising", "instance": launched.name, "checkpoint_every": opts.checkpoint_every,
          "keep": opts.keep, "health_retries": opts.health_retries})
    watch = _Exit(engine, launched.name)
    try:
        while True:
            exited = watch.wait(opts.interval, sleep)
            why = "its main process exited" if exited else _unhealthy(state, spec, engine=engine,
                                                                          retries=opts.health_retries)
            if why:
                emit({"event": "failed", "instance": state.launched.name, "why": why})
                _recover(state, spec, engine=engine, store=store, emit=emit, labels=labels or {})
                watch = _Exit(engine, state.launched.name)
                continue
            if next_checkpoint is not None and clock() >= next_checkpoint:
                _checkpoint(state, engine=engine, store=store, keep=opts.keep, emit=emit)
                next_checkpoint = clock() + (opts.checkpoint_every or 0)
    except KeyboardInterrupt:
        emit({"event": "unsupervised", "instance": state.launched.name, "restarts": state.restarts,
              "checkpoints": state.checkpoints})
    finally:
        watch.close()
    return state


class _Exit:
    """Wakes the supervisor as soon as the container's main process (our init, which exits with the app) ends: a
    pidfd on its host PID (Linux 5.3+), so a crash is seen at once, not at the next health check. Where there is
    none (no PID, or the engine runs elsewhere), waiting is plain sleeping."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.fd: int | None = None
        current = engine.inspect(container=name)
        if current is not None and current.pid > 0:
            with contextlib.suppress(OSError, AttributeError):
                self.fd = os.pidfd_open(current.pid)

    def wait(self, seconds: float, sleep: Callable[[float], None]) -> bool:
        """Wait up to `seconds`; True when the main process has exited meanwhile."""
        if self.fd is None:
            sleep(seconds)
            return False
        readable, _, _ = select.select([self.fd], [], [], seconds)
        return bool(readable)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _unhealthy(state: Supervised, spec: AppSpec, *, engine: Engine, retries: int) -> str:
    """Why the instance counts as failed now ("" while it does not): its container stopped, or its probe failed
    `retries` times in a row."""
    current = engine.inspect(container=state.launched.name)
    if current is None or not current.running:
        return f"container {current.status if current else 'removed'}" + (
            f" (exit code {current.exit_code})" if current is not None and not current.running else "")
    if spec.probe is None:
        return ""
    address = published(current, spec.probe.port) if spec.probe.kind in ("http", "tcp") else None
    try:
        make_check(spec.probe, engine=engine, container=state.launched.name, address=address)()
        state.failures = 0
        return ""
    except NotReady as exc:
        state.failures += 1
        return f"{spec.probe.describe()} failed {state.failures} times in a row ({exc})" \
            if state.failures >= retries else ""


def _checkpoint(state: Supervised, *, engine: Engine, store: SnapshotStore, keep: int,
                emit: Callable[[Event], None]) -> None:
    """One periodic checkpoint (the app keeps running), then the oldest beyond `keep` removed. A failed checkpoint
    is reported and the instance keeps being supervised (the previous checkpoints stay)."""
    state.taken += 1
    tag = f"ha-{state.launched.name.removeprefix('ws-')}-{int(time.time())}-{state.taken}"[-64:].lstrip("-.")
    try:
        done = checkpoint_instance(state.launched.name, engine=engine, store=store, tag=tag)
    except WarmstartError as exc:
        emit({"event": "checkpoint_failed", "instance": state.launched.name, "error": exc.message})
        return
    state.checkpoints.append(done.snapshot)
    emit({"event": "checkpointed", "instance": state.launched.name, "snapshot": done.snapshot,
          "checkpoint_seconds": done.checkpoint_seconds, "frozen_seconds": done.frozen_seconds,
          "size_bytes": done.size_bytes})
    while len(state.checkpoints) > keep:
        old = state.checkpoints.pop(0)
        for snap in store.resolve(old):
            store.remove(snap)


def _recover(state: Supervised, spec: AppSpec, *, engine: Engine, store: SnapshotStore,
             emit: Callable[[Event], None], labels: dict[str, str]) -> None:
    """Bring the instance back in place (same name and host ports): newest good checkpoint, then the build's
    snapshot, then cold."""
    start = time.monotonic()
    name = state.launched.name
    remove_quietly(engine, name)
    ports = _same_ports(state.launched)
    attempts: list[tuple[str, dict[str, Any]]] = [(ref, {"no_fallback": True}) for ref in
                                                  reversed(state.checkpoints)]
    attempts += [(state.launched.app, {"no_fallback": True}), (state.launched.app, {"cold": True})]
    for ref, how in attempts:
        try:
            launched = launch(ref, engine=engine, store=store, ports=ports, spec=spec, name=name,
                              extra_labels=labels, **how)
        except WarmstartError as exc:
            emit({"event": "recovery_attempt_failed", "instance": name, "from": ref, "error": exc.message})
            remove_quietly(engine, name)
            continue
        state.launched, state.failures = launched, 0
        state.restarts += 1
        source = "cold" if launched.mode == "cold" else f"snapshot {launched.snapshot}"
        emit({"event": "recovered", "instance": name, "from": source, "restarts": state.restarts,
              "recovery_seconds": round(time.monotonic() - start, 3), "ready_seconds": launched.ready_seconds})
        return
    emit({"event": "recovery_failed", "instance": name, "restarts": state.restarts})


def _same_ports(launched: LaunchResult) -> list[PortBinding]:
    """The instance's host ports, as `-p IP:HOST:CONTAINER/PROTO` bindings, so clients find it where it was."""
    out = []
    for key, address in launched.ports.items():
        container_port, _, proto = key.partition("/")
        ip, _, host_port = address.rpartition(":")
        out.append(parse_port_binding(f"{ip}:{host_port}:{container_port}/{proto or 'tcp'}"))
    return out
