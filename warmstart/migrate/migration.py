"""Use case `migrate`: move a running sandbox instance to another host, stop-and-copy, through an OCI registry both
hosts reach; its memory state and the files it changed go with it.

    1. final checkpoint: CRIU dumps the app and leaves it frozen (`warmstart-init dump --then freeze`), so nothing
       it answers after the dump is lost; once the snapshot is in this host's cache the source is removed (a
       failure, or a kill of this process, before that thaws it instead: runtime/frozen.py)
    2. push the snapshot to REF
    3. on the destination, `DEST warmstart run APP:TAG --registry REF --no-fallback --json` with the instance's
       name and published ports: DEST is the command that reaches the other host (`ssh hostb`); it pulls, verifies
       and restores (never a cold start, which would lose the state)
    4. if 2 or 3 fails, the instance is restored here from the same snapshot, same name and ports: nothing is lost,
       and the error says which step failed

With `post_copy` (postcopy.py here), step 2 pushes a thin copy of the checkpoint, without the memory the destination
can fetch later, and this host serves that memory from the checkpoint to the destination's page daemon until it has
every page; the destination answers as soon as its working pages have come. A failure of the page server or the
destination before the last page has arrived restores the instance here from the checkpoint, as in 4, after
stopping what runs on the destination.

The downtime is from the start of the dump to the destination's readiness; the result reports each phase: the
freeze of CRIU's dump, the copy (checkpoint into the cache, push, pull) and the restore separately.
`on_destination` is called with the destination's `run` result as soon as it answers, before post-copy's stream
ends: a front sends its clients there then (serve/moves.py).
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core.bounded import loads_json
from warmstart.engines.base import Engine
from warmstart.errors import Interrupted, RegistryError, RestoreError, UsageError, WarmstartError

if TYPE_CHECKING:
    from warmstart.cache.registry import Reference
    from warmstart.migrate.postcopy import PageServer
    from warmstart.runtime.instances import Instance

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MigrateResult:
    instance: str
    snapshot: str  # APP:TAG of the final checkpoint (kept in this host's cache)
    reference: str  # where it was pushed
    destination: dict[str, Any]  # the destination's `run --json` result
    downtime_seconds: float  # dump start -> destination ready (as the destination's run reports it)
    # checkpoint (of which dump: CRIU's freeze until the last page is written), push, destination (= pull, with
    # the destination's start-up, + restore: its engine call to ready); with post-copy also prepare and stream
    phases: dict[str, float]
    mode: str = "stop-and-copy"  # or "post-copy"
    streamed_bytes: int = 0  # post-copy: memory sent by the page server after the destination started


def migrate(name: str, *, to: str, via: list[str], engine: Engine, store: SnapshotStore, insecure: bool = False,
            post_copy: bool = False, page_server: str | None = None, keep_address: bool = False,
            progress: Progress = lambda _: None, dest_timeout: float = 600,
            on_destination: Callable[[dict[str, Any]], None] = lambda _: None) -> MigrateResult:
    from warmstart.cache.registry import Reference
    from warmstart.runtime.instances import inspect_instance
    from warmstart.snapshot.checkpoint import checkpoint_instance

    instance = inspect_instance(engine=engine, name=name)
    ports, address = _placement(instance, keep_address)
    endpoint = _post_copy_endpoint(post_copy, page_server)  # refused now, before the app stops
    tag = f"migrate-{time.strftime('%Y%m%d%H%M%S')}"
    started = time.monotonic()
    progress(f"checkpointing {name} (the app stops with the dump)")
    checkpoint = checkpoint_instance(name, engine=engine, store=store, tag=tag, stop=True)
    frozen = checkpoint.frozen_seconds  # CRIU's own count: from the freeze to the last page written
    phases = {"checkpoint": round(time.monotonic() - started, 3), **({"dump": frozen} if frozen is not None else {})}
    snapshot = store.resolve(checkpoint.snapshot)[0]
    target = Reference.parse(to, default_tag=f"{snapshot.manifest.app}-{tag}")
    step = "push"
    try:
        with contextlib.ExitStack() as cleanup:
            if post_copy:
                step = "prepare"
                shipped, server, lazy = _post_copy_source(snapshot, store=store, tag=f"{tag}-postcopy",
                                                          endpoint=endpoint, cleanup=cleanup, progress=progress)
                phases["prepare"] = round(time.monotonic() - started - phases["checkpoint"], 3)
                step = "push"
            else:
                shipped, server, lazy = snapshot, None, 0
            destination = _ship(shipped, target=target, via=via, name=name, ports=ports, address=address,
                                insecure=insecure, timeout=dest_timeout, store=store, phases=phases,
                                progress=progress, server=server)
            step = "destination"
            downtime = round(time.monotonic() - started, 3)
            on_destination(destination)
            if server is not None:
                step = "stream"
                progress(f"the destination runs; streaming the rest of its memory ({lazy / 2**20:.0f} MiB) from "
                         f"{endpoint}")
                try:
                    phases["stream"] = round(server.wait_done(dest_timeout), 3)
                except WarmstartError:
                    stop_destination(via, name, progress)
                    raise
    except KeyboardInterrupt:  # after the dump, an interrupted migration must not leave the app nowhere
        _back_here(name, checkpoint.snapshot, step=step, via=via, ports=ports, address=address, engine=engine,
                   store=store, progress=progress, why="interrupted")
        raise Interrupted(f"migration of {name} interrupted; it runs here again, restored from "
                          f"{checkpoint.snapshot}") from None
    except (WarmstartError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
        if step == "push" and "push" in phases:
            step = "destination"
        _back_here(name, checkpoint.snapshot, step="", via=via, ports=ports, address=address, engine=engine,
                   store=store, progress=progress, why=f"migration failed ({exc})")
        error = RegistryError if step == "push" else RestoreError
        # Post-copy's price: once the destination has run, what it did there is gone with it.
        lost = ("what it did on the destination since it started there is lost" if step == "stream"
                else "nothing was lost")
        raise error(f"migration of {name} failed at the {step} step: {exc}; it runs here again, restored from "
                    f"{checkpoint.snapshot} ({lost})", details=getattr(exc, "details", "")) from exc
    return MigrateResult(instance=name, snapshot=checkpoint.snapshot, reference=str(target),
                         destination=destination, downtime_seconds=downtime, phases=phases,
                         mode="post-copy" if post_copy else "stop-and-copy", streamed_bytes=lazy)


def _placement(instance: Instance, keep_address: bool) -> tuple[list[str], tuple[str, str] | None]:
    """The instance's published ports (HOST_IP:HOST_PORT:PORT) and, with --keep-address, its IP and MAC, which the
    destination takes (the source is removed before it starts), so that its established TCP connections go on:
    the peers' packets reach the same address."""
    ports = [f"{addr}:{key.split('/')[0]}" for key, addr in sorted(instance.ports.items())]
    if not keep_address:
        return ports, None
    if not instance.ip:
        raise UsageError(f"instance {instance.name} has no single address on a network to keep",
                         hint="migrate without --keep-address (its connections are then closed)")
    return ports, (instance.ip, instance.mac)


def _post_copy_endpoint(post_copy: bool, page_server: str | None) -> str:
    """The page server's endpoint for a post-copy migration ("" for stop-and-copy); what this host cannot do is
    refused here, before the app stops."""
    if not post_copy:
        if page_server:
            raise UsageError("--page-server is for --post-copy")
        return ""
    from warmstart.migrate import postcopy

    problem = postcopy.why_not_here()
    if problem:
        raise UsageError(f"post-copy migration is not possible here: {problem}",
                         hint="migrate without --post-copy (stop-and-copy)")
    return postcopy.endpoint(page_server)


def _back_here(name: str, snapshot: str, *, step: str, via: list[str], ports: list[str],
               address: tuple[str, str] | None, engine: Engine, store: SnapshotStore, progress: Progress,
               why: str) -> None:
    """After the dump the app must not be left nowhere: stop a destination that streams (interrupted mid-stream),
    then restore the app here from its checkpoint, shielded from a second Ctrl-C."""
    from warmstart.core.signals import shielded

    progress(f"{why}; restoring {name} here from {snapshot}")
    with shielded():
        if step == "stream":
            stop_destination(via, name, progress)
        _restore_here(snapshot, name=name, ports=ports, address=address, engine=engine, store=store,
                      progress=progress)


def _post_copy_source(snapshot: Snapshot, *, store: SnapshotStore, tag: str, endpoint: str,
                      cleanup: contextlib.ExitStack, progress: Progress) -> tuple[Snapshot, PageServer, int]:
    """Start the page server on the checkpoint (it loads the pages meanwhile) and publish the thin copy to push;
    both are undone when `cleanup` closes (the thin copy is of use only during this migration)."""
    from warmstart.migrate import postcopy

    creds = postcopy.credentials()
    server = cleanup.enter_context(postcopy.serving(snapshot, store=store, endpoint=endpoint, creds=creds))
    thin, lazy = postcopy.thin_snapshot(snapshot, store=store, tag=tag, page_server=endpoint)
    cleanup.callback(store.remove, thin)
    progress(f"{lazy / 2**20:.0f} MiB of memory stay here for the page server on {endpoint}; pushing the rest")
    return thin, server, lazy


def _ship(snapshot: Snapshot, *, target: Reference, via: list[str], name: str, ports: list[str],
          address: tuple[str, str] | None, insecure: bool,
          timeout: float, store: SnapshotStore, phases: dict[str, float], progress: Progress,
          server: PageServer | None) -> dict[str, Any]:
    """Push `snapshot` to `target`, then restore it on the destination; returns the destination's run result."""
    from warmstart.cache.registry import Registry

    t = time.monotonic()
    Registry(target, insecure=insecure or None).push(snapshot, progress=progress)
    phases["push"] = round(time.monotonic() - t, 3)
    if server is not None:
        server.wait_listening()
    t = time.monotonic()
    argv = [*via, "warmstart", "run", snapshot.ref, "--registry", str(target), "--no-fallback",
            "--name", name, "--json", *(a for p in ports for a in ("-p", p))]
    if address:
        argv += ["--ip", address[0], *(["--mac-address", address[1]] if address[1] else [])]
    if server is not None:  # the destination's TLS key: through the --via channel's stdin, nowhere else
        argv += ["--post-copy-credentials", "-"]
    progress(f"starting it on the destination: {shlex.join(argv)}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          input=server.creds.for_destination() if server is not None else "")
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise RestoreError(f"the destination did not restore it: {why}", details=proc.stderr[-2000:])
    phases["destination"] = round(time.monotonic() - t, 3)
    result = loads_json(proc.stdout)
    if not isinstance(result, dict):
        raise RestoreError("the destination's `run --json` answered something else than a JSON object",
                           details=proc.stdout[-2000:])
    restore = result.get("ready_seconds")
    if isinstance(restore, (int, float)) and 0 <= restore <= phases["destination"]:  # the destination's own count
        phases["pull"] = round(phases["destination"] - restore, 3)  # with its warmstart's start-up
        phases["restore"] = round(float(restore), 3)
    return result


def stop_destination(via: list[str], name: str, progress: Progress) -> None:
    """Best effort: the destination's init stops an app whose memory cannot be completed by itself (exit 126);
    this removes its container too."""
    argv = [*via, "warmstart", "stop", name]
    progress(f"stopping it on the destination: {shlex.join(argv)}")
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def _restore_here(ref: str, *, name: str, ports: list[str], address: tuple[str, str] | None, engine: Engine,
                  store: SnapshotStore, progress: Progress) -> None:
    from warmstart.core.spec import parse_port_binding
    from warmstart.restore.launch import launch

    launch(ref, engine=engine, store=store, ports=[parse_port_binding(p) for p in ports], name=name, address=address,
           no_fallback=True, progress=progress)
