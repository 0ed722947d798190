"""Use case `checkpoint`: a snapshot of a running instance (its state now, not the build's), into the cache with the
same manifest, digests and verification as `build`, restorable with `run APP:TAG`.

Only sandbox instances can be checkpointed: their PID 1 is warmstart-init, whose `dump` (exec'd in the instance, as
at build) captures the files the app changed and CRIU's images while the app keeps running. The dump goes to a dir
inside the instance (its mounts were fixed when it started), is copied out into the cache's staging dir, checked
like any staged snapshot (plain files only: the instance's filesystem is the app's to shape), and removed from the
instance. Cold instances run without the init; they are refused with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from warmstart.cache.manifest import Manifest
from warmstart.cache.store import Snapshot, SnapshotStore, snapshot_files
from warmstart.core import criu, labels, sandbox
from warmstart.core.host import host_facts
from warmstart.core.spec import validate_tag
from warmstart.engines.base import Engine
from warmstart.errors import CheckpointError, UsageError, WarmstartError
from warmstart.runtime.containers import remove_quietly
from warmstart.runtime.frozen import mark, thaw, thaw_orphans, unmark
from warmstart.runtime.instances import inspect_instance

INSIDE = "/tmp/.warmstart"  # in the instance: the init's dump skips it when capturing the app's files


def _copy_out(engine: Engine, name: str, inside: str, out: Path) -> bool:
    """Copy the dump out of the instance straight from the host, at memory or disk speed, instead of through the
    engine's tar stream (1.9 s per GiB here): through /proc/PID/root of its init (the dump may be in a tmpfs inside
    the instance: `dump --ram auto`), else from its writable layer. False (nothing copied) where neither is a plain
    local directory: the caller uses the engine's copy.

    The base path comes from the engine; everything below it is the app's to shape, so each component must be a
    real directory (no symlink), links are copied as links, and the files are checked like any staged snapshot
    afterwards (plain files only)."""
    state = engine.inspect(container=name)
    if state is None:
        return False
    bases = [Path(f"/proc/{state.pid}/root")] if state.pid > 0 else []
    bases += [Path(state.upper_dir)] if state.upper_dir else []
    return any(_copy_below(base, inside, out) for base in bases)


def _copy_below(base: Path, inside: str, out: Path) -> bool:
    path = base
    for part in Path(inside).relative_to("/").parts:
        path = path / part
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    shutil.copytree(path, out, symlinks=True)
    return True


@dataclass(frozen=True)
class CheckpointResult:
    instance: str
    snapshot: str  # APP:TAG
    snapshot_path: str
    size_bytes: int
    checkpoint_seconds: float
    stopped: bool
    frozen_seconds: float | None = None  # how long CRIU kept the app frozen (its stats-dump), when it can be read


def _source(name: str, *, engine: Engine, store: SnapshotStore) -> Snapshot:
    """The snapshot a running sandbox instance was restored from; refused for any other instance."""
    instance = inspect_instance(engine=engine, name=name)
    if instance.labels.get(labels.INIT) != "warmstart-init" or not instance.snapshot:
        raise UsageError(f"instance {name} is not a sandbox restore (mode {instance.mode}): only instances whose "
                         "PID 1 is warmstart-init can be checkpointed",
                         hint="start it from a sandbox snapshot (`warmstart run`), then checkpoint it")
    if instance.status != "running":
        raise UsageError(f"instance {name} is {instance.status}, not running")
    return store.resolve(instance.snapshot)[0]


def _into_stage(out: Path, stage: Path) -> None:
    """Move the dump's snapshot files from `out` into the staging dir proper (beside nothing else), dropping the
    init's log and stats."""
    for leftover in (sandbox.DUMP_LOG, "stats-dump"):
        if (out / leftover).is_file():
            (out / leftover).unlink()
    for rel in snapshot_files(out):  # plain files only, or refused
        (stage / rel).parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(out / rel, stage / rel)
    if (out / sandbox.IMAGES_DIR).is_dir():
        (out / sandbox.IMAGES_DIR).rmdir()
    out.rmdir()


def checkpoint_instance(
    name: str, *, engine: Engine, store: SnapshotStore, tag: str | None = None, stop: bool = False
) -> CheckpointResult:
    """Snapshot a running sandbox instance into the cache. With `stop`, the app is frozen by the dump and the instance
    removed only once the snapshot is published: if that fails, or this process is killed, it runs on (frozen.py)."""
    thaw_orphans(engine, store.root)
    source = _source(name, engine=engine, store=store)
    _refuse_secrets_and_encryption(name, source)
    tag = validate_tag(tag or f"{source.manifest.tag}-ckpt-{time.strftime('%Y%m%d%H%M%S')}")
    if store.get(source.manifest.app, tag) is not None:
        raise UsageError(f"snapshot {source.manifest.app}:{tag} exists already: choose another --tag")
    start = time.monotonic()
    inside = f"{INSIDE}/checkpoint-{os.urandom(4).hex()}"
    marker = mark(store.root, name) if stop else None
    frozen = False
    try:
        with store.staging(source.manifest.app) as stage:
            out = stage / "copy"
            result = engine.exec(container=name, timeout=600, command=(
                str(sandbox.INIT), "dump", "--out", inside, "--ram", "auto", *(("--then", "freeze") if stop else ())))
            frozen = stop and result.exit_code == 0
            try:
                if result.exit_code != 0:
                    why = criu.failure_headline(result.output, result.output, default=f"exit code {result.exit_code}")
                    raise CheckpointError(f"checkpoint of instance {name} failed: {why}",
                                          details=result.output[-2000:],
                                          hint="`warmstart doctor --smoke` checks CRIU and the runtime")
                if not _copy_out(engine, name, inside, out):
                    engine.copy_from(container=name, src=inside, dest=out)
            finally:  # process memory must not stay in the instance (its tmpfs unmounted, its files removed)
                engine.exec(container=name, command=(str(sandbox.INIT), "release", "--out", inside), timeout=60)
            frozen_for = _frozen_seconds(out)
            _into_stage(out, stage)
            seconds = time.monotonic() - start
            snapshot = store.publish(stage, _manifest(source, tag, seconds))
        if stop:
            remove_quietly(engine, name)
            frozen = False
    finally:
        if frozen:  # the snapshot is not stored: the app goes on from where it was frozen
            thaw(engine, name)
        if marker is not None:
            unmark(marker)
    return CheckpointResult(instance=name, snapshot=snapshot.ref, snapshot_path=str(snapshot.path),
                            size_bytes=snapshot.size, checkpoint_seconds=round(seconds, 3), stopped=stop,
                            frozen_seconds=frozen_for)


def _frozen_seconds(out: Path) -> float | None:
    """The time CRIU kept the app frozen, from the dump's stats-dump (dump_stats_entry.frozen_time, in µs; CRIU
    images/stats.proto), or None where it cannot be read (no pycriu)."""
    from warmstart.cache.contents import load_image

    try:
        entries = load_image(out, "stats-dump")
    except WarmstartError:
        return None
    dump = entries[0].get("dump", {}) if entries else {}
    return round(int(dump["frozen_time"]) / 1e6, 4) if "frozen_time" in dump else None


def _refuse_secrets_and_encryption(name: str, source: Snapshot) -> None:
    secret_names = source.manifest.spec.get("secret_env") or []
    if secret_names:  # the one secret rule (docs/secrets-and-signing.md): no value reaches a snapshot in clear
        raise UsageError(f"instance {name} holds the values of its secrets ({', '.join(map(str, secret_names))}) in "
                         "memory since its restore: a checkpoint (or a migration) would store them in clear",
                         hint="snapshots of apps with secret_env come from `warmstart build`, which withholds them")
    if source.manifest.encryption:
        raise UsageError(f"instance {name} was restored from an encrypted snapshot: checkpointing it is not "
                         "supported (its clear text would be staged)")


def _manifest(source: Snapshot, tag: str, seconds: float) -> Manifest:
    return replace(
        source.manifest,
        tag=tag,
        key=hashlib.sha256(f"{source.manifest.key}:{tag}".encode()).hexdigest(),
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        host=host_facts().to_dict(),
        files={},
        timings={"checkpoint_seconds": round(seconds, 3)},  # no cold/trial pair: always restored
        encryption={},
        post_copy={},  # a checkpoint of a post-copy destination holds all of its memory: an ordinary snapshot
        schema_version=1,
    )
