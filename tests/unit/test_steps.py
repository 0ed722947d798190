"""Fast tests (no engine, no daemon; local sockets only) of the steps between start and checkpoint: readiness
probes (streaks, a container that dies, the timeout message), hooks (order, failures named), warm-up (counts,
failures) and prune (count, size, age). The real-engine tests in tests/podman exercise the same code end to end."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.fake_engine import FakeEngine
from warmstart.cache.manifest import Manifest
from warmstart.cache.prune import prune
from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import HookSpec, HttpCall, ProbeSpec, WarmupSpec
from warmstart.engines.base import ContainerState
from warmstart.errors import HookError, ReadinessError, UsageError, WarmupError
from warmstart.runtime.hooks import run_hooks
from warmstart.runtime.probes import NotReady, wait_ready
from warmstart.snapshot.warmup import run_warmup

# -- probes ----------------------------------------------------------------------------------------------------------


def _probe(**kw: object) -> ProbeSpec:
    return ProbeSpec(**{"kind": "tcp", "port": 8080, "timeout": 1.0, "interval": 0.01, **kw})  # type: ignore[arg-type]


def test_a_probe_needs_its_successes_in_a_row() -> None:
    answers = iter([True, False, True, True, True])
    calls = []

    def check() -> None:
        calls.append(1)
        if not next(answers):
            raise NotReady("refused")

    wait_ready(_probe(successes=3), check=check, alive=lambda: None, diagnostics=lambda: ("running", ""))
    assert len(calls) == 5  # the failure reset the streak


def test_a_probe_that_never_passes_says_what_it_awaited_and_saw() -> None:
    def check() -> None:
        raise NotReady("HTTP 503")

    with pytest.raises(ReadinessError) as err:
        wait_ready(_probe(kind="http", path="/healthz", timeout=0.2), check=check, alive=lambda: None,
                   diagnostics=lambda: ("running", "log: still loading"))
    assert "not ready after 0.2s: awaited" in str(err.value) and "last attempt: HTTP 503" in str(err.value)
    assert "container status: running" in str(err.value) and err.value.details == "log: still loading"


def test_a_container_that_dies_ends_the_wait_at_once() -> None:
    def check() -> None:
        raise NotReady("refused")

    start = time.monotonic()
    with pytest.raises(ReadinessError, match=r"container stopped before it became ready \(exited \(code 3\)\)"):
        wait_ready(_probe(timeout=30.0, interval=0.5), check=check, alive=lambda: "exited (code 3)",
                   diagnostics=lambda: ("exited", "Traceback: boom"))
    assert time.monotonic() - start < 10  # not the 30 s timeout


# -- an HTTP app on a local port, for hooks and warm-up ---------------------------------------------------------------


@pytest.fixture
def app() -> Iterator[tuple[ContainerState, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            status = 500 if self.path.startswith("/fail") else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = ContainerState(id="c", name="c", status="running", running=True, exit_code=0, restored=False,
                           ports={"8080/tcp": ("127.0.0.1", server.server_port)})
    yield state, seen
    server.shutdown()


def test_hooks_run_in_order_and_the_first_failure_names_the_phase_and_hook(
    app: tuple[ContainerState, list[str]]
) -> None:
    state, seen = app
    engine = FakeEngine()
    hooks = (HookSpec(kind="http", call=HttpCall(method="POST", path="/close", port=8080)),
             HookSpec(kind="exec", command=("sync",)), HookSpec(kind="signal", signal="SIGUSR2"))
    assert run_hooks("before_checkpoint", hooks, engine=engine, state=state) == [
        "HTTP POST /close", "exec sync", "signal SIGUSR2"]
    assert seen == ["POST /close"] and engine.calls == ["exec sync", "kill SIGUSR2"]
    engine.exec_codes[("false",)] = 1
    failing = (HookSpec(kind="exec", command=("false",)), HookSpec(kind="exec", command=("never",)))
    with pytest.raises(HookError, match=r"after_restore hook #1 \(exec false\) exited with 1"):
        run_hooks("after_restore", failing, engine=engine, state=state)
    assert "exec never" not in engine.calls
    with pytest.raises(HookError, match=r"hook #1 \(HTTP GET /fail\) answered HTTP 500"):
        run_hooks("before_checkpoint", (HookSpec(kind="http", call=HttpCall(path="/fail", port=8080)),),
                  engine=engine, state=state)


def test_warm_up_sends_every_request_repeat_times_and_fails_on_an_error(
    app: tuple[ContainerState, list[str]]
) -> None:
    state, seen = app
    spec = WarmupSpec(requests=(HttpCall(path="/a", port=8080), HttpCall(method="POST", path="/b", port=8080)),
                      repeat=3)
    assert run_warmup(spec, engine=FakeEngine(), state=state).requests == 6
    assert seen == ["GET /a", "POST /b"] * 3
    bad = WarmupSpec(requests=(HttpCall(path="/a", port=8080), HttpCall(path="/fail", port=8080)), repeat=5)
    with pytest.raises(WarmupError, match=r"warm-up request GET /fail answered HTTP 500 \(after 1 requests\)"):
        run_warmup(bad, engine=FakeEngine(), state=state)


# -- prune ------------------------------------------------------------------------------------------------------------


def _snapshot(store: SnapshotStore, app: str, tag: str, size: int, created: str) -> None:
    with store.staging(app) as stage:
        (stage / "checkpoint.tar").write_bytes(b"x" * size)
        store.publish(stage, Manifest(app=app, tag=tag, key=tag * 8, created_at=created, warmstart_version="0",
                                      engine={"name": "podman"}, image={"ref": "i", "id": "sha256:a"}, spec={}))


def test_prune_by_count_size_and_age(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "cache").open()
    _snapshot(store, "a", "old", 100, "2026-01-01T00:00:00+00:00")
    _snapshot(store, "a", "mid", 100, "2026-06-01T00:00:00+00:00")
    _snapshot(store, "a", "new", 100, "2099-01-01T00:00:00+00:00")
    _snapshot(store, "b", "only", 50, "2099-01-01T00:00:00+00:00")
    assert prune(store, keep=1, dry_run=True).removed == ["a:mid", "a:old"]
    assert len(store.snapshots_of()) == 4  # a dry run removes nothing
    by_size = prune(store, max_size=250, dry_run=True)
    assert by_size.removed == ["a:old"] and by_size.freed_bytes == 100
    aged = prune(store, older_than=86400, app="a")
    assert sorted(aged.removed) == ["a:mid", "a:old"]
    assert [s.ref for s in store.snapshots_of()] in (["a:new", "b:only"], ["b:only", "a:new"])
    with pytest.raises(UsageError, match="prune needs at least one of"):
        prune(store)


def test_a_frozen_instances_dump_is_copied_out_of_its_layer_only_through_real_dirs(tmp_path: Path) -> None:
    """checkpoint --stop copies the dump out of the frozen instance's writable layer from the host; a symlink
    anywhere below the layer (the app's to plant) or a layer the engine does not name means: copy through the
    engine instead (False). The layer itself is only read."""
    from warmstart.snapshot.checkpoint import _copy_out

    layer = tmp_path / "upper"
    (layer / "tmp" / ".warmstart" / "checkpoint-1").mkdir(parents=True)
    (layer / "tmp" / ".warmstart" / "checkpoint-1" / "sandbox.json").write_text("{}")

    class Frozen:
        def __init__(self, upper: str) -> None:
            self.upper = upper

        def inspect(self, *, container: str) -> ContainerState:
            return ContainerState(id="c", name=container, status="running", running=True, exit_code=0,
                                  restored=True, upper_dir=self.upper)

    assert not _copy_out(Frozen(""), "i", "/tmp/.warmstart/checkpoint-1", tmp_path / "a")  # type: ignore[arg-type]
    (tmp_path / "elsewhere").mkdir()
    (layer / "tmp" / ".warmstart" / "checkpoint-2").symlink_to(tmp_path / "elsewhere")
    assert not _copy_out(Frozen(str(layer)), "i", "/tmp/.warmstart/checkpoint-2", tmp_path / "b")  # type: ignore[arg-type]
    assert (tmp_path / "elsewhere").is_dir() and not (tmp_path / "b").exists()
    assert _copy_out(Frozen(str(layer)), "i", "/tmp/.warmstart/checkpoint-1", tmp_path / "c")  # type: ignore[arg-type]
    assert (tmp_path / "c" / "sandbox.json").read_text() == "{}"
    assert (layer / "tmp" / ".warmstart" / "checkpoint-1" / "sandbox.json").exists()


def test_trials_time_readiness_as_an_outside_client_sees_it() -> None:
    """The trials' clock polls the published host port from the engine call on (an app can answer before the
    engine returns); probes an outside client cannot run (exec, log) keep our own probe's time."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tests.unit.fake_engine import FakeEngine
    from warmstart.core.spec import AppSpec, PortBinding, ProbeSpec
    from warmstart.snapshot.trials import OutsideClock

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        http = AppSpec(name="a", image="i", ports=(8080,), probe=ProbeSpec(kind="http", port=8080, path="/"))
        clock = OutsideClock(http, [PortBinding(8080, host_port=port)], time.monotonic(), FakeEngine())
        deadline = time.monotonic() + 10
        while clock.first is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert clock.first is not None and clock.seconds(fallback=1e6) < 1e6  # the outside answer, not ours
        # An exec probe cannot run outside: the published port's TCP connect stands in for it.
        execd = AppSpec(name="a", image="i", ports=(8080,), probe=ProbeSpec(kind="exec", command=("true",)))
        clock = OutsideClock(execd, [PortBinding(8080, host_port=port)], time.monotonic(), FakeEngine())
        while clock.first is None and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        assert clock.seconds(fallback=1e6) < 1e6
        unpublished = AppSpec(name="a", image="i", ports=(), probe=ProbeSpec(kind="exec", command=("true",)))
        assert OutsideClock(unpublished, [], time.monotonic(), FakeEngine()).seconds(fallback=42.0) == 42.0
    finally:
        server.shutdown()
