"""Use case `build`: start the app, wait until it is ready, warm it up, run the before-checkpoint hooks, trim its
memory, checkpoint it, and publish the snapshot to the cache.

Whatever happens (failure, timeout, Ctrl-C, SIGTERM) the build container is removed and nothing half-written
becomes visible in the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmstart import __version__
from warmstart.cache.keys import cache_key, key_inputs
from warmstart.cache.manifest import CHECKPOINT_FILE, Manifest
from warmstart.cache.store import Snapshot, SnapshotStore, snapshot_files
from warmstart.core import criu, jvmhelper, labels, sandbox
from warmstart.core.host import host_facts
from warmstart.core.spec import AppSpec, PortBinding
from warmstart.engines.base import Engine, EngineInfo, criu_log_excerpt
from warmstart.errors import (
    CheckpointError,
    EngineError,
    HookError,
    ReadinessError,
    UsageError,
    WarmupError,
)
from warmstart.restore import lazypages, policy
from warmstart.runtime.containers import probe_container, remove_quietly, sweep_orphans
from warmstart.runtime.hooks import before_checkpoint_hooks, run_hooks
from warmstart.security import crypt, signing
from warmstart.security.secretenv import build_env, raise_if_found, scan, secret_values
from warmstart.snapshot.trials import record_working_set, trial_count, trials, uniqueness_gate
from warmstart.snapshot.trim import trim
from warmstart.snapshot.warmup import WarmupResult, run_warmup

Progress = Callable[[str], None]
# The build container's log is saved inside the checkpoint and restored with every instance: capped, so a chatty
# app's output (hundreds of MB seen) is not stored in the snapshot.
BUILD_LOG_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class BuildResult:
    app: str
    snapshot: str  # APP:TAG
    tag: str
    key: str
    snapshot_path: str
    image: str
    image_id: str
    size_bytes: int
    build_seconds: float
    ready_seconds: float
    checkpoint_seconds: float
    reused: bool = False  # an unchanged app: the cached snapshot of the same key was kept
    warmup_requests: int = 0
    warmup_seconds: float = 0.0
    hooks: list[str] = field(default_factory=list)
    trim: dict[str, str] = field(default_factory=dict)
    untrimmed_size_bytes: int | None = None  # with compare_trim: a checkpoint taken just before trimming
    restored_ready_seconds: float | None = None  # median of the trial restores, timed like the trial cold starts
    cold_ready_seconds: float | None = None  # median of the trial cold starts (as `run --cold` makes them)
    working_set_bytes: int | None = None  # recorded on a lazy clone: what a lazy restore copies up front
    streamed_bytes: int | None = None  # and what it leaves to the page daemon


def prepare_image(spec: AppSpec, *, engine: Engine, progress: Progress) -> str:
    """The image ID to start; built first when the spec names a build context."""
    if spec.build_context:
        progress(f"building image {spec.image} from {spec.build_context}")
        engine.build_image(context=Path(spec.build_context), containerfile=spec.containerfile, tag=spec.image,
                           labels={labels.MANAGED: "true", labels.APP: spec.name})
    return engine.image_id(image=spec.image)


def _start(spec: AppSpec, *, engine: Engine, name: str, mode: str, stage: Path) -> None:
    """Start the build container: the app itself (container mode), or the app under warmstart-init with the
    staging dir mounted for the dump (sandbox mode)."""
    common: dict[str, Any] = dict(
        name=name, image=spec.image, env=build_env(spec), ports=[PortBinding(container_port=p) for p in spec.ports],
        labels={**labels.labels_for(spec.name), labels.BUILD_PID: str(os.getpid())}, log_max_bytes=BUILD_LOG_MAX_BYTES,
    )
    if mode == sandbox.CONTAINER:
        engine.run(command=list(spec.command), volumes=spec.volumes, **common)
        return
    image = engine.image_config(image=spec.image)
    command = list(spec.command) or list(image.command)
    if not command:
        raise UsageError(f"image {spec.image} has no command (ENTRYPOINT/CMD): give one after --, or command = [...]")
    common["labels"][labels.INIT] = "warmstart-init"
    engine.run(command=sandbox.boot_command(command, user=image.user),
               volumes=(*spec.volumes, *sandbox.tool_mounts(), f"{stage}:{sandbox.OUT_MOUNT}"),
               extras=sandbox.RunExtras.for_app(spec.name), **common)


def _checkpoint(engine: Engine, container: str, stage: Path, *, mode: str, sub: str = "", keep: bool = True) -> int:
    """Checkpoint into the staging dir (or its `sub` dir); returns the bytes written. Sandbox: the init's dump,
    exec'd in the container, leaves images/, rootfs.tar and sandbox.json (its log and stats are dropped)."""
    out = stage / sub if sub else stage
    if sub:
        out.mkdir(mode=0o700)
    if mode == sandbox.CONTAINER:
        engine.checkpoint(container=container, dest=out / CHECKPOINT_FILE, leave_running=not keep)
    else:
        result = engine.exec(container=container, timeout=600,
                             command=sandbox.dump_command(f"{sandbox.OUT_MOUNT}/{sub}" if sub else sandbox.OUT_MOUNT))
        if result.exit_code != 0:
            log = out / sandbox.DUMP_LOG
            why = criu.failure_headline(result.output, log.read_text(errors="replace") if log.is_file() else "",
                                        default=f"exit code {result.exit_code}")
            raise CheckpointError(f"checkpoint of container {container} failed: {why}",
                                  details=criu_log_excerpt(log) or result.output.strip()[-2000:],
                                  hint="`warmstart doctor --smoke` checks CRIU and the runtime")
        for leftover in (sandbox.DUMP_LOG, "stats-dump"):
            with contextlib.suppress(FileNotFoundError):
                (out / leftover).unlink()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if not keep:
        shutil.rmtree(out)
    return size


def default_mode() -> tuple[str, str]:
    """The build mode when none is asked for, and why: sandbox where this host has what it needs."""
    env = os.environ.get(sandbox.MODE_VAR)
    if env:
        if env not in sandbox.MODES:
            raise UsageError(f"${sandbox.MODE_VAR}={env!r}: expected one of {', '.join(sandbox.MODES)}")
        return env, f"${sandbox.MODE_VAR}"
    why_not = sandbox.missing()
    if why_not:
        return sandbox.CONTAINER, f"sandbox unavailable: {why_not}"
    return sandbox.SANDBOX, "the default where the init and the CRIU prefix exist"


def build(
    spec: AppSpec,
    *,
    engine: Engine,
    store: SnapshotStore,
    tag: str | None = None,
    force: bool = False,
    compare_trim: bool = False,
    mode: str | None = None,
    sign_key: Path | None = None,
    encryption_key_file: Path | None = None,
    progress: Progress = lambda _: None,
) -> BuildResult:
    """Build (or, for an unchanged app, reuse) the snapshot of `spec`. One build per key at a time: a second
    concurrent build of the same key waits, then reuses what the first published."""
    if spec.probe is None:
        raise UsageError(f"app {spec.name!r} has no readiness probe: give --ready-http PATH or --ready-tcp PORT "
                         "(or [apps.NAME.ready] in warmstart.toml)")
    start = time.monotonic()
    if mode is None:
        mode, _ = default_mode()
    if mode not in sandbox.MODES:
        raise UsageError(f"invalid mode {mode!r}: expected one of {', '.join(sandbox.MODES)}")
    if spec.secret_env and mode == sandbox.CONTAINER:
        raise UsageError(f"app {spec.name!r} has secret_env, which needs a sandbox-mode build: a container-mode "
                         "checkpoint saves the container's environment, secrets included")
    encryption_key = None
    if spec.secrets_during_warmup:
        if mode != sandbox.SANDBOX:
            raise UsageError(f"app {spec.name!r}: secrets_during_warmup needs a sandbox-mode build")
        path = crypt.key_file(encryption_key_file)
        if path is None:
            raise UsageError(f"app {spec.name!r}: secrets_during_warmup = true puts secret values in the snapshot, "
                             "which is then encrypted: give a key",
                             hint=f"--encryption-key FILE or ${crypt.KEY_ENV} (`warmstart key encryption FILE` "
                                  "writes one)")
        encryption_key = crypt.load_key(path)
    if sign_key is not None:
        signing.load_signing_key(sign_key)  # a bad key fails now, not after the build
    image_id = prepare_image(spec, engine=engine, progress=progress)
    if mode == sandbox.SANDBOX or spec.jvm_helper:
        command = list(spec.command) or list(engine.image_config(image=spec.image).command)
        spec = dataclasses.replace(spec, jvm_helper=jvmhelper.resolve(spec, command=command, mode=mode))
    info = engine.info()
    host = host_facts()
    inputs = {**key_inputs(spec, image_id=image_id, engine=info, criu_version=host.criu_version), "mode": mode}
    key = cache_key(inputs)
    wanted_tag = tag
    tag = tag or key[:12]
    with store.lock(spec.name, key):
        sweep_orphans(engine, app=spec.name)  # also when reusing: a SIGKILLed build's container must not outlive it
        existing = store.find_key(spec.name, key)
        # An explicit --tag is a name the user will run by: reuse only a snapshot that already carries it.
        if existing is not None and not force and wanted_tag in (None, existing.manifest.tag):
            progress(f"unchanged: reusing snapshot {existing.ref}")
            if sign_key is not None:
                store.add_signature(existing, signing.sign(existing.manifest, sign_key))
            store.save_app(spec)
            t = existing.manifest.timings
            return BuildResult(
                app=spec.name, snapshot=existing.ref, tag=existing.manifest.tag, key=key,
                snapshot_path=str(existing.path), image=spec.image, image_id=image_id, size_bytes=existing.size,
                build_seconds=round(time.monotonic() - start, 3), ready_seconds=t.get("ready_seconds", 0.0),
                checkpoint_seconds=t.get("checkpoint_seconds", 0.0), reused=True,
                restored_ready_seconds=t.get("restored_ready_seconds"), cold_ready_seconds=t.get("cold_ready_seconds"),
            )
        return _build(spec, engine=engine, store=store, tag=tag, key=key, inputs=inputs, image_id=image_id,
                      info=info, host=host.to_dict(), compare_trim=compare_trim, start=start, progress=progress,
                      mode=mode, sign_key=sign_key, encryption_key=encryption_key)


@dataclass
class _Staged:
    """What the steps of one build found, gathered for the manifest and the result."""

    ready_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    warmed: WarmupResult | None = None
    hooks: list[str] = field(default_factory=list)
    trim: dict[str, str] = field(default_factory=dict)
    untrimmed: int | None = None
    working_set: tuple[int, int] | None = None
    trial_timings: dict[str, float] = field(default_factory=dict)


def _build(
    spec: AppSpec, *, engine: Engine, store: SnapshotStore, tag: str, key: str, inputs: dict[str, Any],
    image_id: str, info: EngineInfo, host: dict[str, Any], compare_trim: bool, start: float, progress: Progress,
    mode: str, sign_key: Path | None, encryption_key: bytes | None,
) -> BuildResult:
    name = labels.build_name(spec.name)
    try:
        # The staging dir exists from the start: a sandbox build container dumps into it (mounted at OUT_MOUNT).
        # A snapshot that will hold secrets is dumped to a tmpfs instead and reaches the staging dir encrypted.
        with store.staging(spec.name) as stage, \
                (crypt.plain_dir("build") if encryption_key else contextlib.nullcontext(stage)) as work:
            got = _Staged()
            _warm_and_checkpoint(spec, engine=engine, name=name, mode=mode, work=work, compare_trim=compare_trim,
                                 got=got, progress=progress)
            _gates(spec, engine=engine, store=store, work=work, mode=mode, encrypted=encryption_key is not None,
                   progress=progress)
            got.working_set = _working_set(spec, engine=engine, store=store, work=work, mode=mode, progress=progress)
            progress(f"trials: {trial_count()} cold starts as `run --cold` makes them and as many restores")
            trial = trials(spec, engine=engine, store=store, stage=work, mode=mode, progress=progress)
            got.trial_timings = policy.trial_timings(trial["cold"], trial["restored"])
            manifest = Manifest(
                app=spec.name, tag=tag, key=key, created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                warmstart_version=__version__,
                engine={"name": info.name, "version": info.version, "runtime": info.runtime,
                        "runtime_version": info.runtime_version, "mode": mode},
                image={"ref": spec.image, "id": image_id},
                spec={**spec.to_dict(), "env": sorted(spec.env)},  # names only: values may be secrets
                host=host, key_inputs=inputs,
                timings={"ready_seconds": round(got.ready_seconds, 3),
                         "checkpoint_seconds": round(got.checkpoint_seconds, 3), **got.trial_timings},
                holds=sandbox.holds(work) if mode == sandbox.SANDBOX else {},
            )
            remove_quietly(engine, name)  # before publishing: the container no longer writes into the snapshot
            if encryption_key:
                progress("encrypting the snapshot")
                crypt.encrypt_tree(work, stage, snapshot_files(work), key=encryption_key)
                manifest.encryption = {"algorithm": crypt.ALGORITHM, "key_id": crypt.key_id(encryption_key)}
            signer = (lambda m: signing.sign(m, sign_key)) if sign_key is not None else None
            snapshot: Snapshot = store.publish(stage, manifest, signer=signer)
        store.save_app(spec)
    finally:
        remove_quietly(engine, name)
    return _result(spec, snapshot, got, image_id=image_id, build_seconds=time.monotonic() - start)


def _warm_and_checkpoint(spec: AppSpec, *, engine: Engine, name: str, mode: str, work: Path, compare_trim: bool,
                         got: _Staged, progress: Progress) -> None:
    """Start the build container, wait for readiness, warm up, run the hooks, trim and checkpoint into `work`."""
    progress(f"starting {spec.image} as {name}" + (" under warmstart-init" if mode == sandbox.SANDBOX else ""))
    t = time.monotonic()
    _start(spec, engine=engine, name=name, mode=mode, stage=work)
    progress(f"waiting for {spec.probe.describe()}" if spec.probe else "waiting for the container")
    state = probe_container(engine, container=name, probe=spec.probe)
    got.ready_seconds = time.monotonic() - t  # cold time-to-ready, kept for comparison with restores
    if spec.warmup:
        progress("warming up")
        got.warmed = run_warmup(spec.warmup, engine=engine, state=state)
        progress(f"warmed up: {got.warmed.requests} requests in {got.warmed.seconds:.1f}s")
    got.hooks = run_hooks("before_checkpoint", before_checkpoint_hooks(spec), engine=engine, state=state)
    if compare_trim:
        progress("checkpointing once untrimmed, for comparison")
        got.untrimmed = _checkpoint(engine, name, work, mode=mode, sub="untrimmed", keep=False)
    got.trim = trim(spec.trim, engine=engine, container=name)
    progress("checkpointing")
    t = time.monotonic()
    _checkpoint(engine, name, work, mode=mode)
    got.checkpoint_seconds = time.monotonic() - t


def _gates(spec: AppSpec, *, engine: Engine, store: SnapshotStore, work: Path, mode: str, encrypted: bool,
           progress: Progress) -> None:
    """Refuse the staged snapshot when it holds a secret in clear, or when two clones share "random" state."""
    if not encrypted:  # an encrypted snapshot holds its secrets on purpose, and never in clear
        progress("scanning the snapshot for secrets")
        findings = scan(work, secret_values(spec, required=False))
        for known in (f for f in findings if f.public):
            progress(f"found a publicly known key, not a secret: {known.describe()}")
        raise_if_found(findings, app=spec.name)
    if spec.uniqueness:
        progress(f"uniqueness gate: two trial clones, GET {spec.uniqueness} on each")
        uniqueness_gate(spec, engine=engine, store=store, stage=work, mode=mode)


def _working_set(spec: AppSpec, *, engine: Engine, store: SnapshotStore, work: Path, mode: str,
                 progress: Progress) -> tuple[int, int] | None:
    """Bytes (up front, streamed) of a lazy restore after recording the working set; None where no lazy restore
    will happen. A failed recording costs only the optimisation: every page is then streamed."""
    if mode != sandbox.SANDBOX or lazypages.why_not(
            allowed=spec.lazy_pages, memory=lazypages.images_bytes(work / sandbox.IMAGES_DIR), memo_dir=store.root):
        return None
    progress("recording the working set on a lazily restored clone")
    try:
        eager, lazy = record_working_set(spec, engine=engine, store=store, stage=work)
    except (EngineError, ReadinessError, HookError, CheckpointError, WarmupError) as exc:
        progress(f"recording the working set failed ({exc}); a lazy restore will stream every page")
        return None
    progress(f"working set: {eager * lazypages.PAGE_SIZE / 2**20:.1f} MiB restored up front, "
             f"{lazy * lazypages.PAGE_SIZE / 2**20:.1f} MiB streamed after")
    return eager * lazypages.PAGE_SIZE, lazy * lazypages.PAGE_SIZE


def _result(spec: AppSpec, snapshot: Snapshot, got: _Staged, *, image_id: str, build_seconds: float) -> BuildResult:
    restored = got.trial_timings.get("restored_ready_seconds")
    return BuildResult(
        app=spec.name, snapshot=snapshot.ref, tag=snapshot.manifest.tag, key=snapshot.manifest.key,
        snapshot_path=str(snapshot.path), image=spec.image, image_id=image_id,
        size_bytes=sum(f["size"] for f in snapshot.manifest.files.values()),
        build_seconds=round(build_seconds, 3), ready_seconds=round(got.ready_seconds, 3),
        restored_ready_seconds=round(restored, 3) if restored else None,
        cold_ready_seconds=got.trial_timings.get("cold_ready_seconds"),
        checkpoint_seconds=round(got.checkpoint_seconds, 3),
        warmup_requests=got.warmed.requests if got.warmed else 0,
        warmup_seconds=got.warmed.seconds if got.warmed else 0.0,
        hooks=got.hooks, trim=got.trim, untrimmed_size_bytes=got.untrimmed,
        working_set_bytes=got.working_set[0] if got.working_set else None,
        streamed_bytes=got.working_set[1] if got.working_set else None,
    )
