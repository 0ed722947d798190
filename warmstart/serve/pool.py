"""serve's pool: sandboxes pre-started ahead of demand (container up, ports published, files put back, the init
waiting on a FIFO), so that a request from zero costs only CRIU's restore. A pooled sandbox is activated into an
instance exactly as `run` makes one (hooks, readiness probe)."""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core import labels, sandbox
from warmstart.core.spec import AppSpec
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import RestoreError, UsageError
from warmstart.restore.launch import (
    LaunchResult,
    await_ready,
    lazy_env,
    resolve_ports,
    runs_after_restore,
    started_state,
)
from warmstart.runtime.ports import reserved


@dataclass(frozen=True)
class Prestarted:
    """A sandbox started ahead of demand: container up, ports published, files put back, its init waiting for
    the trigger. `activate` turns it into a running instance at the cost of CRIU's restore alone."""

    spec: AppSpec
    snapshot: Snapshot
    state: ContainerState
    ctl: Path  # the cache's control dir for it, holding the trigger FIFO


def prestart(spec: AppSpec, snapshot: Snapshot, *, engine: Engine, store: SnapshotStore) -> Prestarted:
    """Start a sandbox for `snapshot` that waits to be activated (sandbox-mode snapshots only)."""
    from warmstart.runtime.containers import removed_on_failure
    from warmstart.runtime.hooks import init_env
    from warmstart.security.secretenv import restore_env

    if snapshot.manifest.encryption:
        raise UsageError(f"snapshot {snapshot.ref} is encrypted: it is not pre-started (its clear text would wait "
                         "in memory for a request)")
    if snapshot.manifest.mode != sandbox.SANDBOX:
        raise UsageError(f"snapshot {snapshot.ref} is a {snapshot.manifest.mode}-mode snapshot: only sandbox "
                         "snapshots can be pre-started")
    env, secrets = restore_env(spec)
    name = labels.instance_name(spec.name)
    ctl = store.sandboxes / name
    ctl.mkdir(mode=0o700)
    os.mkfifo(ctl / sandbox.TRIGGER, 0o600)
    try:
        with reserved(resolve_ports(spec, []), lock_dir=store.locks) as bindings, removed_on_failure(engine, name):
            container = engine.run(
                name=name, image=spec.image, command=sandbox.restore_command(wait=True),
                env={**env, **init_env(snapshot.manifest.spec), **lazy_env(spec, snapshot, store.root)},
                secrets=secrets, ports=bindings,
                labels={**labels.labels_for(spec.name), labels.MODE: "pooled", labels.INIT: "warmstart-init",
                        labels.CACHE: str(store.root),
                        labels.SNAPSHOT: snapshot.ref,
                        labels.OWNER_PID: str(os.getpid()),
                        labels.TRIGGER: str(ctl / sandbox.TRIGGER)},
                volumes=(*spec.volumes, *sandbox.tool_mounts(), f"{snapshot.path}:{sandbox.SNAPSHOT_MOUNT}:ro",
                         f"{ctl}:{sandbox.CTL_MOUNT}"),
                extras=sandbox.RunExtras.for_app(spec.name),
            )
    except BaseException:
        shutil.rmtree(ctl, ignore_errors=True)
        raise
    return Prestarted(spec, snapshot, started_state(container, name, bindings, restored=True), ctl)


def activate(pre: Prestarted, *, engine: Engine, trigger_timeout: float = 10.0) -> LaunchResult:
    """Trigger a pre-started sandbox's restore and wait until it is ready (hooks, probe) as `run` does."""
    from warmstart.runtime.containers import removed_on_failure
    from warmstart.runtime.hooks import after_restore_hooks, run_hooks
    from warmstart.security.secretenv import secret_values

    start = time.monotonic()
    with removed_on_failure(engine, pre.state.name):
        try:
            _trigger(pre.ctl / sandbox.TRIGGER, timeout=trigger_timeout)
        finally:
            shutil.rmtree(pre.ctl, ignore_errors=True)
        secrets = secret_values(pre.spec) if any(h.kind == "exec" for h in pre.spec.after_restore) else None
        run_hooks("after_restore", after_restore_hooks(pre.spec, by_init=True), engine=engine, state=pre.state,
                  env=secrets)
        return await_ready(pre.spec, engine=engine, state=pre.state, mode="restored", start=start,
                      after_init=runs_after_restore(pre.snapshot),
                      snapshot=pre.snapshot.ref)


def _trigger(fifo: Path, *, timeout: float) -> None:
    """Write the byte the waiting init reads. Opening a FIFO for writing without a reader fails with ENXIO: the
    init may still be starting, so try again until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise RestoreError(f"the pre-started sandbox did not take its trigger: {exc.strerror}") from exc
            time.sleep(0.005)
            continue
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
        return
