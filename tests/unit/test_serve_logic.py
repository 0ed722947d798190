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
    async def scenario() -> tuple[str, float]:
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
    assert answered == "silent" and seconds < 5


def test_idle_connection_is_closed() -> None:
    async def scenario() -> str:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
        done = asyncio.Event()
        answered: list[str] = []

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

    assert asyncio.run(scenario()) == "answered"


def _named(name: str, port: int) -> Instance:
    r = LaunchResult(app="app", mode="restored", container=name, name=name, ready_seconds=0.1, ports={})
    return Instance(r, "127.0.0.1", port)


@pytest.mark.parametrize("request_line, expected", [
    (b"GET /x HTTP/1.1", b"HTTP/1.0 200 OK"),  # idempotent: sent again to the other instance, which answers
    (b"POST /x HTTP/1.1", b"HTTP/1.1 503 Service Unavailable"),  # not replayed: the client is told to retry
])
def test_an_upstream_that_drops_the_connection_never_leaves_the_client_unanswered(
    tmp_path: Path, request_line: bytes, expected: bytes
) -> None:
    """An instance that closes or resets a connection before answering (a full accept queue, a crash) makes the
    front send the request to another instance where that is safe, else answer 503 with Retry-After."""
    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        async def dropping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.transport.abort()  # a reset, before any byte of an answer

        async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (dropping, answering)]
        events: list[dict[str, Any]] = []
        f = front(tmp_path, wait_timeout=5)
        f.emit = events.append
        f.http = True
        ports = [srv.sockets[0].getsockname()[1] for srv in servers]
        f.instances = [_named("drops", ports[0]), _named("answers", ports[1])]
        front_srv = await asyncio.start_server(f._handle, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", front_srv.sockets[0].getsockname()[1])
        w.write(request_line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        reply = await asyncio.wait_for(r.read(), timeout=10)
        for srv in (*servers, front_srv):
            srv.close()
        return reply, events

    reply, events = asyncio.run(scenario())
    assert reply.startswith(expected), reply
    kinds = [e["event"] for e in events]
    if expected.endswith(b"200 OK"):
        assert kinds[:1] == ["retried"] and "rejected" not in kinds
    else:
        assert "retried" not in kinds and "rejected" in kinds and b"Retry-After: 1\r\n" in reply
