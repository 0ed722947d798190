"""serve's decisions without an engine: how many instances demand calls for, back-off after failed starts, and
the proxy's timeouts (an upstream that never answers gets the client a 503, never a hang)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_engine import FakeEngine
from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec
from warmstart.errors import EngineError
from warmstart.restore.launch import LaunchResult
from warmstart.serve import front as serve_mod
from warmstart.serve.front import Front, Instance, ServeOptions, _proxy

SPEC = AppSpec(name="app", image="img", ports=(8080,))


def front(tmp_path: Path, **opts: Any) -> Front:
    o = ServeOptions(app="app", listen_host="127.0.0.1", listen_port=1, **opts)
    return Front(o, engine=FakeEngine(), store=SnapshotStore(tmp_path / "c").open(), spec=SPEC, emit=lambda e: None)


def instance(active: int) -> Instance:
    r = LaunchResult(app="app", mode="restored", container="c", name="n", ready_seconds=0.1, ports={})
    return Instance(r, "127.0.0.1", 1, active=active)


@pytest.mark.parametrize("waiting, actives, opts, expected", [
    (0, [], {}, 0),
    (1, [], {}, 1),
    (0, [], {"min_warm": 1, "max_instances": 2}, 1),
    (5, [10], {"max_instances": 3, "concurrency": 10}, 2),
    (30, [10], {"max_instances": 3, "concurrency": 10}, 3),
    (100, [], {"max_instances": 2, "concurrency": 1}, 2),
    (0, [3], {"max_instances": 2, "concurrency": 2}, 2),
])
def test_wanted_instances_follow_demand_within_bounds(tmp_path: Path, waiting: int, actives: list[int],
                                                      opts: dict[str, int], expected: int) -> None:
    f = front(tmp_path, **opts)
    f.waiting = waiting
    f.instances = [instance(a) for a in actives]
    assert f.wanted() == expected


def test_failed_starts_back_off_instead_of_retrying_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def failing_launch(*args: Any, **kwargs: Any) -> LaunchResult:
        calls.append(time.monotonic())
        raise EngineError("engine down")

    monkeypatch.setattr(serve_mod, "launch", failing_launch)
    events: list[dict[str, Any]] = []
    f = front(tmp_path, wait_timeout=2.5)
    f.emit = events.append

    async def scenario() -> None:
        f.waiting = 1
        async with f.changed:
            f._maybe_start()
        await asyncio.sleep(2.0)
        f.stopping = True

    asyncio.run(scenario())
    # 0 s, then after 0.5 s, then after 1 s more: 3 tries in 2 s (a burst would be hundreds)
    assert 2 <= len(calls) <= 4, calls
    assert [e["retry_in_seconds"] for e in events if e["event"] == "start_failed"][:3] == [0.5, 1.0, 2.0][:len(calls)]


def test_upstream_that_never_answers_is_reported_not_hung() -> None:
    async def scenario() -> tuple[bool, float]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
        up_port = upstream.sockets[0].getsockname()[1]
        result: dict[str, Any] = {}

        async def client_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", up_port)
            t = time.monotonic()
            result["answered"] = await _proxy(reader, writer, up_r, up_w, first_byte=0.5, idle=10)
            result["seconds"] = time.monotonic() - t
            up_w.close()
            writer.close()

        front_srv = await asyncio.start_server(client_side, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", front_srv.sockets[0].getsockname()[1])
        w.write(b"GET / HTTP/1.0\r\n\r\n")
        await w.drain()
        await asyncio.wait_for(r.read(), timeout=5)
        upstream.close()
        front_srv.close()
        return result["answered"], result["seconds"]

    answered, seconds = asyncio.run(scenario())
    assert answered is False and seconds < 5


def test_idle_connection_is_closed() -> None:
    async def scenario() -> bool:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
        done = asyncio.Event()
        answered: list[bool] = []

        async def client_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream.sockets[0].getsockname()[1])
            answered.append(await _proxy(reader, writer, up_r, up_w, first_byte=10, idle=0.5))
            up_w.close()
            writer.close()
            done.set()

        front_srv = await asyncio.start_server(client_side, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", front_srv.sockets[0].getsockname()[1])
        await asyncio.wait_for(done.wait(), timeout=5)  # the client never spoke: closed as idle
        assert await asyncio.wait_for(r.read(), timeout=5) == b""
        upstream.close()
        front_srv.close()
        return answered[0]

    assert asyncio.run(scenario()) is True
