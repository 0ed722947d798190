"""Use case `migrate`: move a running sandbox instance to another host, stop-and-copy, through an OCI registry both
hosts reach; its memory state and the files it changed go with it.

    1. final checkpoint: CRIU dumps the app and ends it in the same step (`warmstart-init dump --then stop`), so
       nothing it answers after the dump is lost; the snapshot lands in this host's cache, the source is removed
    2. push the snapshot to REF
    3. on the destination, `DEST warmstart run APP:TAG --registry REF --no-fallback --json` with the instance's
       name and published ports: DEST is the command that reaches the other host (`ssh hostb`); it pulls, verifies
       and restores (never a cold start, which would lose the state)
    4. if 2 or 3 fails, the instance is restored here from the same snapshot, same name and ports: nothing is lost,
       and the error says which step failed

The downtime is from the start of the dump to the destination's readiness; the result reports each phase.
Post-copy (restoring lazily on the destination, pages served over the network by the source's CRIU page server)
is not done: the lazy restore here streams from local images (lazypages.py), and the page server would need a
port the source keeps open for as long as the destination's pages stream.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmstart.cache.store import SnapshotStore
from warmstart.engines.base import Engine
from warmstart.errors import RegistryError, RestoreError, WarmstartError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MigrateResult:
    instance: str
    snapshot: str  # APP:TAG of the final checkpoint (kept in this host's cache)
    reference: str  # where it was pushed
    destination: dict[str, Any]  # the destination's `run --json` result
    downtime_seconds: float  # dump start -> destination ready (as the destination's run reports it)
    phases: dict[str, float]  # checkpoint, push, destination


def migrate(name: str, *, to: str, via: list[str], engine: Engine, store: SnapshotStore, insecure: bool = False,
            progress: Progress = lambda _: None, dest_timeout: float = 600) -> MigrateResult:
    from warmstart.cache.registry import Reference, Registry
    from warmstart.checkpoint import checkpoint_instance
    from warmstart.instances import inspect_instance
    from warmstart.launch import launch
    from warmstart.spec import parse_port_binding

    instance = inspect_instance(engine=engine, name=name)
    ports = [f"{addr}:{key.split('/')[0]}" for key, addr in sorted(instance.ports.items())]
    tag = f"migrate-{time.strftime('%Y%m%d%H%M%S')}"
    started = time.monotonic()
    progress(f"checkpointing {name} (the app stops with the dump)")
    checkpoint = checkpoint_instance(name, engine=engine, store=store, tag=tag, stop=True)
    phases = {"checkpoint": round(time.monotonic() - started, 3)}
    snapshot = store.resolve(checkpoint.snapshot)[0]
    target = Reference.parse(to, default_tag=f"{snapshot.manifest.app}-{tag}")
    try:
        t = time.monotonic()
        with store.staging("push") as scratch:
            Registry(target, insecure=insecure or None).push(snapshot, scratch=scratch, progress=progress)
        phases["push"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        argv = [*via, "warmstart", "run", checkpoint.snapshot, "--registry", str(target), "--no-fallback",
                "--name", name, "--json", *(a for p in ports for a in ("-p", p))]
        progress(f"starting it on the destination: {shlex.join(argv)}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=dest_timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise RestoreError(f"the destination did not restore it: {why}", details=proc.stderr[-2000:])
        destination = json.loads(proc.stdout)
        phases["destination"] = round(time.monotonic() - t, 3)
    except (WarmstartError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
        progress(f"migration failed ({exc}); restoring {name} here from {checkpoint.snapshot}")
        bindings = [parse_port_binding(p) for p in ports]
        launch(checkpoint.snapshot, engine=engine, store=store, ports=bindings, name=name, no_fallback=True,
               progress=progress)
        step = "push" if "push" not in phases else "destination"
        error = RegistryError if step == "push" else RestoreError
        raise error(f"migration of {name} failed at the {step} step: {exc}; it runs here again, restored from "
                    f"{checkpoint.snapshot} (nothing was lost)") from exc
    return MigrateResult(instance=name, snapshot=checkpoint.snapshot, reference=str(target),
                         destination=destination,
                         downtime_seconds=round(phases["checkpoint"] + phases["push"] + phases["destination"], 3),
                         phases=phases)
