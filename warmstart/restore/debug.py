"""Use case `debug`: restore a snapshot into an isolated instance, stopped before it runs a single instruction, so a
debugger (gdb, py-spy, jcmd) attaches to the state as it was at the checkpoint; as many times as wanted from the same
snapshot, with production untouched.

Isolated: no network but loopback (`--network none`: nothing it does can reach a production peer), no volumes of
the app unless asked for (`-v`), no secrets handed over (its init gets no values, the helper's after-restore step
does not run), no published port. The restore itself is the sandbox path's (warmstart-init, CRIU's
`--leave-stopped`); `warmstart-init thaw` inside the instance lets the app run on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from warmstart.cache.store import SnapshotStore
from warmstart.core import labels, sandbox
from warmstart.core.spec import missing_host_paths, validate_volume
from warmstart.engines.base import Engine
from warmstart.errors import RestoreError, UsageError
from warmstart.restore.launch import known_app
from warmstart.restore.lazypages import LAZY_VAR
from warmstart.runtime.containers import removed_on_failure, status_and_logs
from warmstart.security.secretenv import public_env

STOPPED_LINE = "is stopped for a debugger"  # sandbox-init/restore.go restoreStopped
STOPPED_MODE = "stopped"  # sandbox-init/restore.go StoppedMode: LAZY_VAR's value for such a restore


@dataclass(frozen=True)
class DebugInstance:
    name: str
    snapshot: str  # APP:TAG
    container: str
    init_pid: int  # host PIDs: a debugger on the host attaches to these
    app_pids: list[int]
    resume: str  # the command that lets the app run on


def debug_instance(ref: str, *, engine: Engine, store: SnapshotStore, volumes: tuple[str, ...] = (),
                   timeout: float = 120) -> DebugInstance:
    """Start a stopped, isolated restore of snapshot `ref` and return where a debugger attaches."""
    snapshot = store.resolve(ref)[0]
    if snapshot.manifest.mode != sandbox.SANDBOX:
        raise UsageError(f"snapshot {snapshot.ref} is a {snapshot.manifest.mode}-mode snapshot: only sandbox snapshots "
                         "can be restored stopped", hint="`warmstart cache coredump` reads any snapshot")
    if snapshot.manifest.encryption:
        raise UsageError(f"snapshot {snapshot.ref} is encrypted: a debug instance would hold its clear text",
                         hint="`warmstart run` it with its key, or debug an unencrypted build")
    volumes = tuple(validate_volume(v) for v in volumes)
    missing_host_paths(volumes)
    store.verify(snapshot)
    spec = known_app(snapshot.manifest.app, store=store, tag=snapshot.manifest.tag).spec
    name = f"{labels.instance_name(spec.name)}-debug"
    with removed_on_failure(engine, name):
        container = engine.run(
            name=name, image=spec.image, command=sandbox.restore_command(),
            env={**public_env(spec), LAZY_VAR: STOPPED_MODE}, ports=[],
            labels={**labels.labels_for(spec.name), labels.MODE: "debug", labels.INIT: "warmstart-init",
                    labels.SNAPSHOT: snapshot.ref, labels.INSTANCE: "true", labels.CACHE: str(store.root)},
            volumes=(*sandbox.tool_mounts(), f"{snapshot.path}:{sandbox.SNAPSHOT_MOUNT}:ro", *volumes),
            extras=sandbox.RunExtras(hostname=sandbox.hostname_for(spec.name), network="none"),
        )
        init_pid = _await_stopped(engine, name, timeout)
        return DebugInstance(name=name, snapshot=snapshot.ref, container=container, init_pid=init_pid,
                             app_pids=_children(init_pid), resume=f"warmstart exec {name} -- {sandbox.INIT} thaw")


def _await_stopped(engine: Engine, name: str, timeout: float) -> int:
    """Wait for the init's line that the app is restored and stopped; its host PID. RestoreError with the
    container's status and log lines when it stops or says nothing in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = engine.inspect(container=name)
        if state is None or not state.running:
            break
        if STOPPED_LINE in engine.logs(container=name, tail=50):
            return state.pid
        time.sleep(0.1)
    status, logs = status_and_logs(engine, name)
    raise RestoreError(f"debug instance {name} was not restored stopped within {timeout:g}s (container {status})",
                       details=logs)


def _children(pid: int) -> list[int]:
    """The host PIDs of a process's children (the restored app's root task is the init's child)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(c) for c in text.split()]
    except OSError:
        pass
    return sorted(found)
