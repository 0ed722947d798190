"""Launch decisions (restore, fallback, refusal) with a fake engine; the real thing is in tests/podman."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import warmstart.snapshot.build
import warmstart.snapshot.trials
from tests.unit.fake_engine import FakeEngine
from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec, PortBinding, ProbeSpec
from warmstart.errors import RestoreError, SnapshotNotFound, UnknownAppError, UsageError
from warmstart.restore.launch import launch
from warmstart.snapshot.build import build


def _probed(engine: object, *, container: str, probe: object, known: object = None, after_init: bool = False) -> object:
    """Stands in for probe_container: the fake engine's containers are ready at once."""
    return known

SPEC = AppSpec(name="app", image="img", ports=(8080,))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeEngine, SnapshotStore]:
    engine = FakeEngine()
    store = SnapshotStore(tmp_path / "c").open()
    # build() insists on a probe, which the fake cannot answer: build with the probe stubbed, run without one.
    with monkeypatch.context() as m:
        m.setattr(warmstart.snapshot.build, "probe_container", _probed)
        m.setattr(warmstart.snapshot.trials, "probe_container", _probed)
        build(AppSpec(name="app", image="img", ports=(8080,), probe=ProbeSpec(kind="tcp", port=8080)),
              engine=engine, store=store)
    store.save_app(SPEC)
    engine.calls.clear()  # what the build did (its boot and trials): the tests look at what launch does
    return engine, store


def test_restores_when_a_usable_snapshot_exists(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    result = launch("app", engine=engine, store=store, ports=[PortBinding(8080, host_port=9000)])
    assert result.mode == "restored" and result.reason is None
    assert result.ports == {"8080/tcp": "127.0.0.1:9000"}


def test_failed_restore_falls_back_cold_with_the_reason(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    engine.fail_restore = "restore from x failed: criu failed"
    result = launch("app", engine=engine, store=store, ports=[])
    assert result.mode == "cold" and "criu failed" in (result.reason or "")
    assert [c.split()[0] for c in engine.calls[-3:]] == ["restore", "remove", "run"]  # failed one removed first


def test_no_fallback_turns_a_failed_restore_into_an_error(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    engine.fail_restore = "boom"
    with pytest.raises(RestoreError, match="--no-fallback forbids a cold start") as err:
        launch("app", engine=engine, store=store, ports=[], no_fallback=True)
    assert "restore.log" in err.value.details
    assert not any(c.startswith("run") for c in engine.calls)


def test_changed_image_means_cold_with_reason(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    engine.images["img"] = "sha256:bbb"
    result = launch("app", engine=engine, store=store, ports=[])
    assert result.mode == "cold" and "changed since snapshot" in (result.reason or "")


def test_tampered_snapshot_is_quarantined_and_cold_with_reason(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    snap = store.latest("app")
    assert snap is not None
    memory = snap.path / "images" / "pages-1.img"  # a file the manifest lists: the app's memory
    data = memory.read_bytes()
    memory.write_bytes(data[:-1] + b"X")  # same size, other bytes
    result = launch("app", engine=engine, store=store, ports=[])
    assert result.mode == "cold"
    assert "does not match its sha256 in the manifest; quarantined to" in (result.reason or "")
    assert store.snapshots_of("app") == [] and len(store.quarantined()) == 1
    with pytest.raises(SnapshotNotFound, match="no snapshot of app 'app'"):
        launch("app", engine=engine, store=store, ports=[], no_fallback=True)


def test_snapshot_needing_a_cpu_flag_this_host_lacks_is_refused(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    snap = store.latest("app")
    assert snap is not None
    raw = json.loads((snap.path / "manifest.json").read_text())
    raw["host"]["cpu_flags"].append("warmstart_imaginary_flag")
    (snap.path / "manifest.json").write_text(json.dumps(raw))
    result = launch("app", engine=engine, store=store, ports=[])
    assert result.mode == "cold"
    assert "CPU lacks flags the snapshot was made with: warmstart_imaginary_flag" in (result.reason or "")
    assert store.snapshots_of("app")  # refused, not quarantined: it may suit another host


def test_unchanged_app_reuses_its_snapshot_unless_forced(setup: tuple[FakeEngine, SnapshotStore],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine, store = setup
    monkeypatch.setattr(warmstart.snapshot.build, "probe_container", _probed)
    monkeypatch.setattr(warmstart.snapshot.trials, "probe_container", _probed)
    spec = AppSpec(name="app", image="img", ports=(8080,), probe=ProbeSpec(kind="tcp", port=8080))
    first = store.latest("app")
    again = build(spec, engine=engine, store=store)
    assert again.reused and again.snapshot == first.ref
    forced = build(spec, engine=engine, store=store, force=True)
    assert not forced.reused and forced.snapshot == first.ref  # same key, same tag: replaced
    changed = build(dataclasses.replace(spec, env={"A": "1"}), engine=engine, store=store)
    assert not changed.reused and changed.key != first.manifest.key
    assert len(store.snapshots_of("app")) == 2


def test_unknown_app_and_foreign_port(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    engine, store = setup
    with pytest.raises(UnknownAppError, match="unknown app 'nope'"):
        launch("nope", engine=engine, store=store, ports=[])
    with pytest.raises(UsageError, match="publishes container ports \\[8080\\]"):
        launch("app", engine=engine, store=store, ports=[PortBinding(9999)])


@pytest.mark.parametrize("error", ["timeout", "create"])
def test_any_engine_failure_while_restoring_falls_back_cold(setup: tuple[FakeEngine, SnapshotStore],
                                                             error: str) -> None:
    from warmstart.errors import EngineError

    engine, store = setup

    engine.fail_restore = EngineError("podman container did not finish within 120s" if error == "timeout"
                                      else "docker create failed: conflict")
    result = launch("app", engine=engine, store=store, ports=[])
    assert result.mode == "cold"
    assert "did not finish within 120s" in (result.reason or "") or "docker create failed" in (result.reason or "")


def test_stop_with_a_grace_period_sends_sigterm_first(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    from warmstart.runtime.instances import stop_instances

    engine, store = setup
    name = launch("app", engine=engine, store=store, ports=[]).name
    assert stop_instances(engine=engine, names=[name], timeout=10) == {name: 143}
    assert engine.calls[-2:] == [f"stop {name} 10", f"remove {name}"]
    with pytest.raises(UsageError, match="-t/--time must be 0 or more"):
        stop_instances(engine=engine, names=[name], timeout=-1)


def test_a_missing_volume_host_path_is_a_usage_error_not_a_restore_failure(
        setup: tuple[FakeEngine, SnapshotStore], tmp_path: Path) -> None:
    engine, store = setup
    for _ in range(3):
        with pytest.raises(UsageError, match="does not exist"):
            launch("app", engine=engine, store=store, ports=[], volumes=(f"{tmp_path}/missing:/x",))
    assert engine.calls == []  # nothing was started
    snap = store.latest("app")
    assert snap is not None and store.health(snap).consecutive_failures == 0


def test_stop_by_app_reaches_only_the_instances_of_its_cache(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    from warmstart.runtime.instances import stop_instances

    engine, store = setup
    here = launch("app", engine=engine, store=store, ports=[]).name
    other = launch("app", engine=engine, store=store, ports=[]).name
    engine.containers[other].labels["io.warmstart.cache"] = "/elsewhere"  # as if launched from another cache
    assert list(stop_instances(engine=engine, names=[], app="app", cache=str(store.root))) == [here]
    assert engine.inspect(container=other) is not None
    assert list(stop_instances(engine=engine, names=[], all_=True)) == [other]  # --all-caches


def test_port_locks_are_exclusive_and_leave_no_file_behind(tmp_path: Path) -> None:
    from warmstart.runtime.ports import reserved

    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    for _ in range(3):
        with reserved([PortBinding(8080), PortBinding(8081)], lock_dir=locks) as bound:
            port = bound[0].host_port
            assert port and len(list(locks.iterdir())) == 2
            with pytest.raises(UsageError, match="being published by another warmstart launch"):
                with reserved([PortBinding(8080, host_port=port)], lock_dir=locks):
                    pass
    assert list(locks.iterdir()) == []  # one lock file per launch piled up before (#29)


def test_what_a_killed_build_or_serve_left_is_swept_by_the_next_stop(setup: tuple[FakeEngine, SnapshotStore]) -> None:
    from warmstart.core import labels
    from warmstart.runtime.containers import sweep_orphans
    from warmstart.runtime.instances import stop_instances

    engine, store = setup
    gone = "999999999"  # above any pid_max: no process has it
    build_name = labels.build_name("app")
    engine.run(name=build_name, image="img", command=[], env={}, ports=[],
               labels={labels.MANAGED: "true", labels.APP: "app", labels.BUILD_PID: gone})
    orphan = launch("app", engine=engine, store=store, ports=[], extra_labels={labels.OWNER_PID: gone}).name
    served = launch("app", engine=engine, store=store, ports=[], extra_labels={labels.OWNER_PID: str(os.getpid())})
    assert sweep_orphans(engine, app="other") == []
    assert sorted(sweep_orphans(engine, app="app")) == sorted([build_name, orphan])  # the live serve's stays
    assert set(engine.containers) == {served.name}
    engine.run(name=build_name, image="img", command=[], env={}, ports=[],
               labels={labels.MANAGED: "true", labels.APP: "app", labels.BUILD_PID: gone})
    stopped = stop_instances(engine=engine, names=[], app="app", cache=str(store.root))
    assert set(stopped) == {build_name, served.name}  # stop --app also takes what a killed build left
    assert engine.containers == {}
