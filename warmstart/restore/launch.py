"""Use case `run`: restore a NEW instance from the newest usable snapshot, or start the app cold and say why.

The fallback is the point: a missing, stale or broken snapshot must never leave the user without a running
service, unless they asked for restore-or-fail (`no_fallback`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warmstart.cache.store import Snapshot, SnapshotStore, parse_ref
from warmstart.core import labels, sandbox
from warmstart.core.host import host_facts, incompatibilities
from warmstart.core.spec import AppSpec, PortBinding, missing_host_paths, validate_volume
from warmstart.engines.base import ContainerState, Engine, Limits
from warmstart.errors import (
    CacheError,
    EngineError,
    HookError,
    ManifestError,
    ReadinessError,
    RegistryError,
    RestoreError,
    SignatureError,
    SnapshotCorrupt,
    SnapshotNotFound,
    UnknownAppError,
    UsageError,
    WarmstartError,
)
from warmstart.runtime.ports import reserved

if TYPE_CHECKING:
    from warmstart.security.signing import TrustPolicy

# Modules needed only once a snapshot has been chosen (containers, hooks, probes, secretenv, signing, lazypages)
# are imported inside the functions that use them: `warmstart run` must reach its first engine call within 50 ms of
# exec (#11), and these cost it 10 ms. tests/unit/test_early.py pins that they stay out of the early imports.

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


def resolve_ports(spec: AppSpec, requested: list[PortBinding]) -> list[PortBinding]:
    """Every port the app publishes gets a binding: the user's, else host port 0 (chosen and reserved by
    `ports.reserved` just before the launch). A -p for a port the app does not publish is refused."""
    by_port = {}
    published = {f"{p}/tcp" for p in spec.ports}
    for binding in requested:
        if binding.key not in published:
            raise UsageError(
                f"-p {binding.key}: app {spec.name!r} publishes container ports {list(spec.ports) or 'none'} (tcp)"
            )
        by_port[binding.key] = binding
    for port in spec.ports:
        by_port.setdefault(f"{port}/tcp", PortBinding(container_port=port))
    return list(by_port.values())


def started_state(container: str, name: str, bindings: list[PortBinding], restored: bool) -> ContainerState:
    """What we know of an instance we just started, without an engine round trip."""
    return ContainerState(id=container, name=name, status="running", running=True, exit_code=0, restored=restored,
                          ports={b.key: (b.host_ip, b.host_port) for b in bindings})


def usable_snapshot(
    spec: AppSpec, *, engine: Engine, store: SnapshotStore, tag: str | None = None, trust: TrustPolicy | None = None
) -> tuple[Snapshot | None, str]:
    """The newest snapshot (or the tagged one) this host and engine can restore, verified and accepted by the
    signature policy; or None and why.

    A snapshot whose files do not match its manifest is quarantined and never restored."""
    try:
        candidates = [s for s in [store.get(spec.name, tag)] if s] if tag else store.snapshots_of(spec.name)
    except CacheError as exc:  # a manifest that does not validate, an entry that is not ours
        return None, str(exc)
    if not candidates:
        return None, f"no snapshot {spec.name}:{tag} in {store.root}" if tag else \
            f"no snapshot of app {spec.name!r} in {store.root}"
    here = host_facts(store.root)
    current_image: str | None = None
    reasons = []
    for snap in candidates:
        m = snap.manifest
        if m.post_copy and not tag:
            reasons.append(f"snapshot {snap.ref} is a post-copy migration's (restored by its tag, while it migrates)")
            continue
        if m.engine.get("name") != engine.name:
            reasons.append(f"snapshot {snap.ref} was made with {m.engine.get('name')}, not {engine.name}")
            continue
        problems = incompatibilities(m.host, here)
        if problems:
            reasons.append(f"snapshot {snap.ref} does not fit this host: {'; '.join(problems)}")
            continue
        if current_image is None:
            try:
                current_image = engine.image_id(image=spec.image)
            except EngineError as exc:
                return None, f"image {spec.image} of snapshot {snap.ref} cannot be used: {exc}"
        if current_image != m.image.get("id"):
            reasons.append(f"image {spec.image} changed since snapshot {snap.ref} was taken (rebuild it)")
            continue
        from warmstart.restore.policy import skip_reason

        skip = skip_reason(snap.ref, m.timings, store.health(snap), always_restore=spec.always_restore)
        if skip:
            reasons.append(skip)
            continue
        if m.encryption:
            problem = _key_problem(m.encryption)
            if problem:
                reasons.append(f"snapshot {snap.ref} is encrypted: {problem}")
                continue
        try:
            # Under a trust policy the signature must bind the bytes restored: no stamp shortcut (the cache's
            # own record, which whoever rewrites the pages can rewrite too).
            store.verify(snap, full=trust is not None and trust.active)
        except SnapshotCorrupt as exc:
            where = store.quarantine(snap)
            return None, f"{exc}; quarantined to {where}"
        from warmstart.security import signing

        try:
            signing.check(m, snap.signature(), trust or signing.NO_POLICY, ref=snap.ref)
        except SignatureError as exc:
            reasons.append(f"signature refused: {exc}")
            continue
        return snap, ""
    return None, "; ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")


def spec_from_snapshot(snapshot: Snapshot) -> AppSpec:
    """An app known only from a snapshot (pulled from a registry): its manifest has env names, not values."""
    try:
        return AppSpec.from_dict({**snapshot.manifest.spec, "env": {}, "name": snapshot.manifest.app})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"snapshot {snapshot.ref}: its manifest's spec is malformed: {exc}") from exc


@dataclass(frozen=True)
class KnownApp:
    spec: AppSpec
    cold_blocker: str = ""  # why a cold start is impossible ("" when it is possible)


def known_app(app: str, *, store: SnapshotStore, spec: AppSpec | None = None, tag: str | None = None) -> KnownApp:
    """The one rule for what an app is: the spec file's description, else the record of its last build, else
    what its newest (or tagged) snapshot says. Raises UnknownAppError when none exists."""
    if spec is not None:
        return KnownApp(spec)
    recorded = store.load_app(app)
    if recorded is not None:
        return KnownApp(recorded)
    try:
        latest = store.get(app, tag) if tag else store.latest(app)
    except CacheError:
        latest = None
    if latest is None:
        raise UnknownAppError(
            f"unknown app {app!r}: nothing was built or pulled under that name in {store.root}",
            hint=f"run `warmstart build --name {app} ...` or `warmstart pull REF` first",
        )
    blocker = ""
    if latest.manifest.spec.get("env"):
        blocker = (f"app {app!r} is known here only from a snapshot, whose manifest does not carry env values; "
                   "describe it in warmstart.toml to allow cold starts")
    return KnownApp(spec_from_snapshot(latest), blocker)


def pull_if_missing(app: str, tag: str | None, *, store: SnapshotStore, registry: str,
                    progress: Progress, trust: TrustPolicy | None = None) -> str:
    """Pull from `registry` when the snapshot is not here; "" on success or no need, else why it failed."""
    try:
        if store.get(app, tag) if tag else store.latest(app):
            return ""
    except CacheError:
        pass
    progress(f"no local snapshot of {app}: pulling {registry}")
    from warmstart.cache.registry import Reference, Registry  # only when pulling: it brings oras and requests

    try:
        Registry(Reference.parse(registry)).pull(store, trust=trust, progress=progress)
    except WarmstartError as exc:
        return f"pull from {registry} failed: {exc}"
    return ""


def launch(
    app: str,
    *,
    engine: Engine,
    store: SnapshotStore,
    ports: list[PortBinding],
    no_fallback: bool = False,
    cold: bool = False,
    spec: AppSpec | None = None,
    registry: str | None = None,
    trust: TrustPolicy | None = None,
    name: str | None = None,
    extra_labels: dict[str, str] | None = None,
    limits: Limits | None = None,
    volumes: tuple[str, ...] = (),
    post_copy_tls: dict[str, str] | None = None,
    address: tuple[str, str] | None = None,
    progress: Progress = lambda _: None,
) -> LaunchResult:
    """Start one instance of `app` (APP or APP:TAG): pull (with `registry`, when missing here) -> choose a usable
    snapshot -> restore it, or start cold saying why. `spec` (from a spec file) overrides the app record of the
    last build; an app known only from a pulled snapshot can be restored but not started cold if it needs env.
    `address` (IP, MAC or ""): a sandbox restore takes it on the engine's network and keeps the app's established
    TCP connections (a migration whose address moves with the instance)."""
    if cold and no_fallback:
        raise UsageError("--cold and --no-fallback contradict each other")
    app, tag = parse_ref(app)
    pull_failure = ""
    if registry and not cold:
        pull_failure = pull_if_missing(app, tag, store=store, registry=registry, progress=progress, trust=trust)
        if pull_failure and no_fallback:
            raise RegistryError(pull_failure)
    known = known_app(app, store=store, spec=spec, tag=tag)
    volumes = tuple(validate_volume(v) for v in volumes)
    missing_host_paths((*known.spec.volumes, *volumes))  # a usage error, never charged to the snapshot
    if name is not None and engine.inspect(container=labels.validate_instance_name(name)) is not None:
        # Refused before anything starts: a failed launch removes its container by name, which must be ours.
        raise UsageError(f"a container named {name} already exists", hint="choose another --name, or stop it first")
    if tag and not cold and not pull_failure:
        _require_tag(app, tag, store=store)
    with reserved(resolve_ports(known.spec, ports), lock_dir=store.locks) as bindings:
        start = time.monotonic()
        snapshot, reason = _choose(known.spec, cold=cold, engine=engine, store=store, tag=tag, trust=trust)
        reason = f"{pull_failure}; {reason}" if pull_failure and reason else reason
        if snapshot is None and no_fallback:
            raise SnapshotNotFound(f"cannot restore {app!r}: {reason} (and --no-fallback forbids a cold start)")
        placement = Placement(name or labels.instance_name(known.spec.name),
                              {**(extra_labels or {}), labels.CACHE: str(store.root)}, limits,
                              volumes, post_copy_tls, address)
        return _restore_or_cold(known, snapshot, reason, engine=engine, store=store, bindings=bindings, start=start,
                                no_fallback=no_fallback, placement=placement, progress=progress)


def _require_tag(app: str, tag: str, *, store: SnapshotStore) -> None:
    """An explicit APP:TAG that is not here at all is a user error, not a reason to start cold."""
    try:
        missing = store.get(app, tag) is None
    except CacheError:
        missing = False  # present but unusable: usable_snapshot says why, and the fallback applies
    if missing:
        tags = sorted(s.manifest.tag for s in store.snapshots_of(app))
        raise SnapshotNotFound(f"no snapshot {app}:{tag} in {store.root}",
                               hint=f"tags of {app}: {', '.join(tags)}" if tags else
                               f"`warmstart cache ls {app}` lists its snapshots")


def _choose(
    spec: AppSpec, *, cold: bool, engine: Engine, store: SnapshotStore, tag: str | None, trust: TrustPolicy | None
) -> tuple[Snapshot | None, str]:
    if cold:
        return None, "cold start requested (--cold)"
    return usable_snapshot(spec, engine=engine, store=store, tag=tag, trust=trust)


def _restore_or_cold(
    known: KnownApp, snapshot: Snapshot | None, reason: str, *, engine: Engine, store: SnapshotStore,
    bindings: list[PortBinding], start: float, no_fallback: bool, placement: Placement, progress: Progress,
) -> LaunchResult:
    """Restore `snapshot` (recording the outcome for its circuit), else or on failure start cold, saying why."""
    spec = known.spec
    if snapshot is not None:
        try:
            restored = _restore(spec, snapshot, engine=engine, bindings=bindings, start=start, progress=progress,
                                placement=placement, memo_dir=store.root)
            store.record_restore(snapshot, None)
            return restored
        except (EngineError, ReadinessError, HookError, CacheError) as exc:
            store.record_restore(snapshot, str(exc))
            if no_fallback:
                raise RestoreError(
                    f"restore of {spec.name!r} from snapshot {snapshot.ref} failed (and --no-fallback forbids a cold "
                    f"start): {exc}",
                    details=exc.details,
                ) from exc
            reason = f"restore from snapshot {snapshot.ref} failed: {exc}"
            progress(f"{reason}; starting cold")
    if known.cold_blocker:
        raise UnknownAppError(f"cannot start {spec.name!r} cold ({reason}): {known.cold_blocker}")
    return _cold(spec, engine=engine, bindings=bindings, start=start, reason=reason, progress=progress,
                 placement=placement)


@dataclass(frozen=True)
class Placement:
    """What the user says about a new instance: its container name, extra labels and resource limits
    (`run --name/--label/--memory/--cpus`)."""

    name: str
    labels: dict[str, str]
    limits: Limits | None = None
    volumes: tuple[str, ...] = ()  # beside the spec's: a restored process never opened them, so any can be added
    post_copy_tls: dict[str, str] | None = None  # a post-copy restore's TLS files (postcopy.destination_credentials)
    address: tuple[str, str] | None = None  # (IP, MAC or ""): the restore's fixed address, connections kept


def _restore(
    spec: AppSpec, snapshot: Snapshot, *, engine: Engine, bindings: list[PortBinding], start: float, progress: Progress,
    placement: Placement | None = None, memo_dir: Path | None = None,
) -> LaunchResult:
    from warmstart.runtime.containers import removed_on_failure
    from warmstart.runtime.hooks import after_restore_hooks, init_env, run_hooks
    from warmstart.runtime.probes import preload
    from warmstart.security.secretenv import restore_env

    placement = placement or Placement(labels.instance_name(spec.name), {})
    name = placement.name
    env, secrets = restore_env(spec)
    progress(f"restoring {name} from snapshot {snapshot.ref} ({snapshot.manifest.mode} mode)")
    preload()
    with removed_on_failure(engine, name), _readable(snapshot) as source, \
            _post_copy_volumes(snapshot, placement.post_copy_tls) as tls:
        if snapshot.manifest.mode == sandbox.SANDBOX:
            # A fresh container of the app's image whose PID 1 (our init) restores the app from the snapshot dir,
            # mounted read-only: nothing is copied or unpacked per launch.
            container = engine.run(
                name=name, image=spec.image, command=sandbox.restore_command(),
                env={**env, **init_env(snapshot.manifest.spec), **lazy_env(spec, snapshot, memo_dir),
                     **({sandbox.KEEP_TCP_VAR: "1"} if placement.address else {})},
                secrets=secrets, ports=bindings,
                labels={**placement.labels, **labels.labels_for(spec.name), labels.MODE: "restored",
                        labels.INIT: "warmstart-init", labels.SNAPSHOT: snapshot.ref, labels.INSTANCE: "true"},
                volumes=(*spec.volumes, *placement.volumes, *sandbox.tool_mounts(),
                         f"{source}:{sandbox.SNAPSHOT_MOUNT}:ro", *tls),
                extras=_extras(spec.name, placement.address), limits=placement.limits,
            )
        else:
            if placement.address:
                raise UsageError(f"snapshot {snapshot.ref} is a {snapshot.manifest.mode}-mode snapshot: a fixed "
                                 "address (--ip) is for sandbox restores")
            container = engine.restore(archive=snapshot.checkpoint, name=name, ports=bindings)
        state = started_state(container, name, bindings, restored=True)
        by_init = snapshot.manifest.mode == sandbox.SANDBOX
        run_hooks("after_restore", after_restore_hooks(spec, by_init=by_init), engine=engine, state=state,
                  env=secrets)
        return await_ready(spec, engine=engine, state=state, mode="restored", start=start, snapshot=snapshot.ref,
                      after_init=runs_after_restore(snapshot))


def _extras(app: str, address: tuple[str, str] | None) -> sandbox.RunExtras:
    extras = sandbox.RunExtras.for_app(app)
    return dataclasses.replace(extras, ip=address[0], mac=address[1]) if address else extras


def _cold(
    spec: AppSpec, *, engine: Engine, bindings: list[PortBinding], start: float, reason: str, progress: Progress,
    placement: Placement | None = None,
) -> LaunchResult:
    from warmstart.runtime.containers import removed_on_failure
    from warmstart.security.secretenv import run_env

    placement = placement or Placement(labels.instance_name(spec.name), {})
    name = placement.name
    progress(f"starting {name} cold: {reason}")
    if spec.secret_env:  # the one path where the engine holds the values (docs/secrets-and-signing.md)
        progress(f"note: a cold start passes {', '.join(spec.secret_env)} in the container's environment, which "
                 f"{engine.name} records (`{engine.name} inspect {name}` shows it); restores never do")
    with removed_on_failure(engine, name):
        container = engine.run(
            name=name, image=spec.image, command=list(spec.command), env=run_env(spec), ports=bindings,
            labels={**placement.labels, **labels.labels_for(spec.name), labels.INSTANCE: "true"},
            volumes=(*spec.volumes, *placement.volumes), limits=placement.limits,
        )
        state = started_state(container, name, bindings, restored=False)
        return await_ready(spec, engine=engine, state=state, mode="cold", start=start, reason=reason)


@contextlib.contextmanager
def _readable(snapshot: Snapshot) -> Iterator[Path]:
    """The dir to mount for a restore: the snapshot itself, or (encrypted) its files decrypted into a tmpfs for the
    time of the launch (CRIU has read them once the instance is ready)."""
    if not snapshot.manifest.encryption:
        yield snapshot.path
        return
    from warmstart.security import crypt  # only for encrypted snapshots: off the common restore path

    path = crypt.key_file()
    if path is None:
        raise CacheError(f"snapshot {snapshot.ref} is encrypted: set ${crypt.KEY_ENV} to its key file")
    with crypt.decrypted(snapshot.path, list(snapshot.manifest.files), key=crypt.load_key(path)) as plain:
        yield plain


@contextlib.contextmanager
def _post_copy_volumes(snapshot: Snapshot, tls: dict[str, str] | None) -> Iterator[tuple[str, ...]]:
    """A post-copy restore's TLS files as a volume for the init, for the time of the launch (postcopy.py)."""
    if not snapshot.manifest.post_copy:
        yield ()
        return
    if not tls:
        raise CacheError(f"snapshot {snapshot.ref} is a post-copy migration's: `warmstart migrate --post-copy` "
                         "restores it, handing over the credentials its pages are served with")
    from warmstart.restore.postcopy import tls_volume

    with tls_volume(tls) as volume:
        yield (volume,)


def _key_problem(encryption: dict[str, str]) -> str:
    """Why this process cannot decrypt a snapshot encrypted as `encryption` says ("" when it can)."""
    from warmstart.security import crypt

    path = crypt.key_file()
    if path is None:
        return f"set ${crypt.KEY_ENV} to its key file"
    try:
        key = crypt.load_key(path)
    except UsageError as exc:
        return str(exc)
    if crypt.key_id(key) != encryption.get("key_id"):
        return f"{path} is key {crypt.key_id(key)}, the snapshot was encrypted with {encryption.get('key_id')}"
    return ""


def lazy_env(spec: AppSpec, snapshot: Snapshot, memo_dir: Path | None) -> dict[str, str]:
    """Ask the init for a lazy restore where it pays and this host can (lazypages.py); `memo_dir`: the cache root.
    A post-copy snapshot has no other way: its pages are on the host it migrates from (postcopy.py)."""
    from warmstart.restore.lazypages import memory_bytes, restore_env

    if snapshot.manifest.post_copy:
        from warmstart.core.host import UFFD_MEMO, uffd_supported
        from warmstart.restore.postcopy import restore_env as post_copy_env

        if not uffd_supported(memo_dir / UFFD_MEMO if memo_dir else None):
            raise CacheError(f"snapshot {snapshot.ref} is a post-copy migration, which needs a lazy restore, and this "
                             "host's CRIU cannot restore lazily (`criu check --feature uffd-noncoop` fails)")
        return post_copy_env(snapshot.manifest)

    return restore_env(allowed=spec.lazy_pages, memory=memory_bytes(snapshot.manifest.files), memo_dir=memo_dir)


def runs_after_restore(snapshot: Snapshot) -> bool:
    """Whether the restoring init runs the app's afterRestore before it is ready (the JVM helper)."""
    from warmstart.runtime.hooks import init_env

    return snapshot.manifest.mode == sandbox.SANDBOX and bool(init_env(snapshot.manifest.spec))


def await_ready(
    spec: AppSpec, *, engine: Engine, state: ContainerState, mode: str, start: float,
    snapshot: str | None = None, reason: str | None = None, after_init: bool = False,
) -> LaunchResult:
    from warmstart.runtime.containers import probe_container

    probe_container(engine, container=state.name, probe=spec.probe, known=state, after_init=after_init)
    ready_seconds = round(time.monotonic() - start, 3)
    ports = {key: f"{ip or '0.0.0.0'}:{port}" for key, (ip, port) in state.ports.items()}
    return LaunchResult(
        app=spec.name, mode=mode, container=state.id, name=state.name, ready_seconds=ready_seconds,
        ports=ports, snapshot=snapshot, reason=reason,
    )

