"""The build's trials on the staged snapshot, before it is published: clones restored as `run` restores them (the
uniqueness gate, the working-set recording) and cold starts timed side by side with restores (the figures `run`'s
restore policy compares)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from warmstart.cache.manifest import CHECKPOINT_FILE
from warmstart.cache.store import SnapshotStore
from warmstart.core import labels, sandbox
from warmstart.core.spec import AppSpec, HttpCall, PortBinding, ProbeSpec
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import EngineError, HookError, ReadinessError, UniquenessError, UsageError
from warmstart.restore import lazypages
from warmstart.restore.launch import resolve_ports, started_state
from warmstart.runtime.containers import probe_container, published, remove_quietly
from warmstart.runtime.hooks import after_restore_hooks, init_env, run_hooks
from warmstart.runtime.ports import reserved
from warmstart.runtime.probes import NotReady, http_request, make_check
from warmstart.security.secretenv import build_env, restore_env, run_env
from warmstart.snapshot.warmup import run_warmup

Progress = Callable[[str], None]


@contextlib.contextmanager
def trial_clone(
    spec: AppSpec, *, engine: Engine, store: SnapshotStore, stage: Path, mode: str,
    init_extra: dict[str, str] | None = None, volumes: tuple[str, ...] = (),
) -> Iterator[tuple[ContainerState, float]]:
    """Restore one clone of the staged snapshot as `run` would (after-restore hooks, probe) and yield its state and
    time-to-ready; the clone is removed afterwards, whatever happens. `init_extra`: more of the init's environment
    (lazy restore, recording); `volumes`: more mounts."""
    name = labels.build_name(spec.name)
    try:
        with reserved(resolve_ports(spec, []), lock_dir=store.locks) as bindings:
            start = time.monotonic()
            outside = OutsideClock(spec, bindings, start, engine)
            if mode == sandbox.SANDBOX:
                env, secrets = trial_restore_env(spec)
                cid = engine.run(name=name, image=spec.image, command=sandbox.restore_command(),
                                 env={**env, **init_env(spec.to_dict()), **(init_extra or {})}, secrets=secrets,
                                 ports=bindings,
                                 labels={**labels.labels_for(spec.name), labels.BUILD_PID: str(os.getpid()),
                                         labels.INIT: "warmstart-init"},
                                 volumes=(*spec.volumes, *sandbox.tool_mounts(),
                                          f"{stage}:{sandbox.SNAPSHOT_MOUNT}:ro", *volumes),
                                 extras=sandbox.RunExtras.for_app(spec.name))
            else:
                cid = engine.restore(archive=stage / CHECKPOINT_FILE, name=name, ports=bindings)
        state = started_state(cid, name, bindings, restored=True)
        by_init = mode == sandbox.SANDBOX
        run_hooks("after_restore", after_restore_hooks(spec, by_init=by_init), engine=engine, state=state,
                  env=secrets if mode == sandbox.SANDBOX else None)
        state = probe_container(engine, container=name, probe=spec.probe, known=state,
                                after_init=by_init and bool(init_env(spec.to_dict())))
        yield state, outside.seconds(time.monotonic() - start)
    finally:
        remove_quietly(engine, name)


def uniqueness_gate(spec: AppSpec, *, engine: Engine, store: SnapshotStore, stage: Path, mode: str) -> None:
    """Restore two clones from the staged snapshot (after-restore hooks included, as `run` does), GET
    `spec.uniqueness` on each, and refuse the snapshot when they answer the same: Lambda SnapStart leaves
    "uniqueness" to its users; here the build checks it."""
    assert spec.uniqueness is not None
    port = spec.probe.port if spec.probe and spec.probe.kind == "http" else (spec.ports[0] if spec.ports else 0)
    if not port:
        raise UsageError(f"app {spec.name!r}: the uniqueness probe needs a published port")
    answers: list[bytes] = []
    for _ in range(2):
        with trial_clone(spec, engine=engine, store=store, stage=stage, mode=mode) as (state, _):
            status, body = http_request(*published(state, port), HttpCall(path=spec.uniqueness), timeout=10)
            if not 200 <= status < 300:
                raise UniquenessError(f"uniqueness probe GET {spec.uniqueness} answered HTTP {status} on a trial clone")
            answers.append(body)
    if answers[0] == answers[1]:
        raise UniquenessError(
            f"two clones restored from the snapshot answered GET {spec.uniqueness} identically "
            f"({answers[0][:80].decode(errors='replace')!r}): every instance would share that state; no snapshot "
            "was published",
            hint="reseed in an after_restore hook, or use the Python helper (python_helper = true, which reseeds "
                 "random and numpy); drop `uniqueness` if sharing is intended")


class OutsideClock:
    """When the app first answers its HTTP or TCP probe on its published host port, polled every 10 ms from the
    moment of the engine call by a thread of its own, as a client outside would see it (benchmarks/outside.py,
    ../shared/tools/outside-ttr): not from when the engine call returns and our own probe starts. A cold start's
    app can answer before `podman run` returns; a restore's cannot. Timing both from the engine's return judged
    restores of fast-booting services faster than their cold starts while clients saw them slower.
    An exec or log probe cannot be run from outside: then the first port the app publishes is polled with a TCP
    connect, which a cold start may pass before it is ready and a restore passes when it is (a bias towards cold
    starts, the safe side: what users fear is a restore slower than a cold start). `seconds()` falls back to our
    own probe's time when there is nothing to poll or nothing answered."""

    def __init__(self, spec: AppSpec, bindings: list[PortBinding], start: float, engine: Engine) -> None:
        self.start = start
        self.first: float | None = None
        self.stop = threading.Event()
        probe = spec.probe
        if probe is not None and probe.kind not in ("http", "tcp") and spec.ports:
            probe = ProbeSpec(kind="tcp", port=spec.ports[0], timeout=probe.timeout)
        binding = next((b for b in bindings if probe and b.container_port == probe.port), None)
        if probe is None or probe.kind not in ("http", "tcp") or binding is None or not binding.host_port:
            return
        host = "127.0.0.1" if binding.host_ip in ("", "0.0.0.0") else binding.host_ip
        check = make_check(probe, engine=engine, container="", address=(host, binding.host_port))
        threading.Thread(target=self._poll, args=(check, probe.timeout), daemon=True).start()

    def _poll(self, check: Callable[[], None], timeout: float) -> None:
        deadline = self.start + timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                check()
            except NotReady:
                self.stop.wait(0.01)
                continue
            self.first = time.monotonic()
            return

    def seconds(self, fallback: float) -> float:
        """The outside time-to-ready, else `fallback` (our own probe's)."""
        self.stop.set()
        return self.first - self.start if self.first is not None else fallback


TRIALS_VAR = "WARMSTART_TRIALS"  # trials each way (default TRIALS); the test suite lowers it where speed matters
TRIALS = 3


def trial_count() -> int:
    raw = os.environ.get(TRIALS_VAR, "")
    if not raw:
        return TRIALS
    if not raw.isdigit() or not 1 <= int(raw) <= 20:
        raise UsageError(f"${TRIALS_VAR}={raw!r}: expected a whole number from 1 to 20")
    return int(raw)


def cold_trial_seconds(spec: AppSpec, *, engine: Engine, store: SnapshotStore) -> float:
    """Time-to-ready of one cold start made exactly as `run --cold` makes it (a plain container of the image, not
    under our init), from the engine call to the app's first answer on its published port (OutsideClock)."""
    name = labels.build_name(spec.name)
    try:
        with reserved(resolve_ports(spec, []), lock_dir=store.locks) as bindings:
            start = time.monotonic()
            outside = OutsideClock(spec, bindings, start, engine)
            cid = engine.run(name=name, image=spec.image, command=list(spec.command), env=trial_env(spec),
                             ports=bindings, volumes=spec.volumes,
                             labels={**labels.labels_for(spec.name), labels.BUILD_PID: str(os.getpid())})
        probe_container(engine, container=name, probe=spec.probe,
                        known=started_state(cid, name, bindings, restored=False))
        return outside.seconds(time.monotonic() - start)
    finally:
        remove_quietly(engine, name)


def trials(spec: AppSpec, *, engine: Engine, store: SnapshotStore, stage: Path, mode: str,
           progress: Progress) -> dict[str, list[float]]:
    """Time-to-ready of `trial_count()` cold starts and as many restores of the staged snapshot, each made as `run`
    makes it (restores lazily where it would) and timed the same way, interleaved so that a noisy moment hits both:
    `run` compares their medians before choosing to restore (restorepolicy). A kind that fails is left out."""
    lazy = lazypages.restore_env(allowed=spec.lazy_pages, memory=lazypages.images_bytes(stage / sandbox.IMAGES_DIR),
                                 memo_dir=store.root) if mode == sandbox.SANDBOX else {}
    times: dict[str, list[float]] = {"cold": [], "restored": []}
    failed: set[str] = set()
    for _ in range(trial_count()):
        for kind in ("cold", "restored"):
            if kind in failed:
                continue
            try:
                if kind == "cold":
                    times[kind].append(round(cold_trial_seconds(spec, engine=engine, store=store), 3))
                else:
                    with trial_clone(spec, engine=engine, store=store, stage=stage, mode=mode,
                                      init_extra=lazy) as (_, seconds):
                        times[kind].append(round(seconds, 3))
            except (EngineError, ReadinessError, HookError) as exc:
                # Kept: the failure may be this host's or this moment's (an after-restore hook reaching a service
                # that is down); `run` tries, falls back cold and counts failures for the snapshot's circuit.
                progress(f"the trial {'cold start' if kind == 'cold' else 'restore'} failed ({exc}); the snapshot is "
                         "kept without that figure")
                failed.add(kind)
                times[kind] = []
    return times


def record_working_set(spec: AppSpec, *, engine: Engine, store: SnapshotStore, stage: Path) -> tuple[int, int]:
    """Restore a clone lazily through the init's recorder, replay the warm-up on it, and mark every page it touched
    eager in the staged snapshot (sandbox-init/workingset.go): a lazy restore then copies what readiness and the
    warm-up traffic need up front, and streams only the rest. Returns (pages made eager, pages left lazy)."""
    with tempfile.TemporaryDirectory(prefix="warmstart-record-") as record:
        with trial_clone(spec, engine=engine, store=store, stage=stage, mode=sandbox.SANDBOX,
                          init_extra=lazypages.record_env(),
                          volumes=(f"{record}:{lazypages.RECORD_MOUNT}",)) as (state, _):
            if spec.warmup:
                run_warmup(spec.warmup, engine=engine, state=state)
        return lazypages.record_working_set(images=stage / sandbox.IMAGES_DIR,
                                            faults=Path(record) / lazypages.FAULTS_FILE)


def trial_restore_env(spec: AppSpec) -> tuple[dict[str, str], dict[str, str]]:
    """A trial restore's environment and secrets, as a launch's (restore_env), or without the values when
    warmstart's environment lacks them."""
    try:
        return restore_env(spec)
    except UsageError:
        return build_env(spec), {}


def trial_env(spec: AppSpec) -> dict[str, str]:
    """Trial clones get what a launch gives (secrets included) when warmstart's environment has them."""
    try:
        return run_env(spec)
    except UsageError:
        return build_env(spec)
