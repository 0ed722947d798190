"""Use case `serve`: a scale-from-zero TCP front. It accepts connections on a listen address; when no instance
is running it restores one (falling back cold as `run` does) and forwards the waiting connections once it is
ready; it stops instances idle for longer than `idle` seconds, keeps `min_warm` ready ahead of demand, and never
runs more than `max_instances`. A connection that cannot be served within `wait_timeout` gets a clean HTTP 503
(HTTP apps) or a closed connection, never a hang.

Scaling is deliberately simple: one instance start at a time; a new one only while connections wait and fewer
than `max_instances` run; connections go to the ready instance with the fewest open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warmstart.cache.store import SnapshotStore
from warmstart.containers import remove_quietly
from warmstart.engines.base import Engine
from warmstart.errors import UsageError, WarmstartError
from warmstart.launch import LaunchResult, launch
from warmstart.spec import AppSpec

Event = dict[str, Any]
HTTP_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n"
            b"Connection: close\r\n\r\nno instance became ready in time")


@dataclass
class Instance:
    result: LaunchResult
    host: str
    port: int
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    served: int = 0


@dataclass(frozen=True)
class ServeOptions:
    app: str
    listen_host: str
    listen_port: int
    idle: float = 60.0
    min_warm: int = 0
    max_instances: int = 1
    wait_timeout: float = 30.0
    container_port: int | None = None


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid --listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


class Front:
    def __init__(self, opts: ServeOptions, *, engine: Engine, store: SnapshotStore, spec: AppSpec | None,
                 emit: Callable[[Event], None]) -> None:
        if opts.max_instances < 1:
            raise UsageError("--max must be at least 1")
        if not 0 <= opts.min_warm <= opts.max_instances:
            raise UsageError("--min-warm must be between 0 and --max")
        if opts.idle <= 0 or opts.wait_timeout <= 0:
            raise UsageError("--idle and --wait-timeout must be greater than 0")
        self.opts = opts
        self.engine = engine
        self.store = store
        self.spec = spec or store.load_app(opts.app)
        if self.spec is None:
            snap = store.latest(opts.app)
            if snap is None:
                raise UsageError(f"unknown app {opts.app!r}: build it first")
            from warmstart.launch import spec_from_snapshot

            self.spec = spec_from_snapshot(snap)
        ports = self.spec.ports
        self.port = opts.container_port or (ports[0] if len(ports) == 1 else 0)
        if self.port not in ports:
            raise UsageError(f"app {opts.app!r} publishes {list(ports)}: choose one with --port")
        self.http = self.spec.probe is not None and self.spec.probe.kind == "http"
        self.emit = emit
        self.instances: list[Instance] = []
        self.starting: asyncio.Task[Instance | None] | None = None
        self.changed = asyncio.Condition()
        self.waiting = 0
        self.stopping = False

    # -- scaling ------------------------------------------------------------------------------------------------------
    def _ready(self) -> Instance | None:
        return min(self.instances, key=lambda i: i.active, default=None)

    def _maybe_start(self) -> None:
        want = max(self.opts.min_warm, 1 if self.waiting else 0)
        if self.stopping or self.starting is not None or len(self.instances) >= self.opts.max_instances:
            return
        if len(self.instances) < want:
            self.starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> Instance | None:
        t = time.monotonic()
        instance = None
        try:
            result = await asyncio.to_thread(
                launch, self.opts.app, engine=self.engine, store=self.store, ports=[], spec=self.spec)
            host, _, port = result.ports[f"{self.port}/tcp"].rpartition(":")
            instance = Instance(result, "127.0.0.1" if host in ("0.0.0.0", "") else host, int(port))
            if self.stopping:
                await asyncio.to_thread(remove_quietly, self.engine, result.name)
                return None
            self.instances.append(instance)
            self.emit({"event": "started", "instance": result.name, "mode": result.mode,
                       "ready_seconds": result.ready_seconds, "reason": result.reason,
                       "seconds_since_request": round(time.monotonic() - t, 3), "instances": len(self.instances)})
        except WarmstartError as exc:
            self.emit({"event": "start_failed", "error": str(exc)})
        finally:
            async with self.changed:
                self.starting = None
                self._maybe_start()
                self.changed.notify_all()
        return instance

    async def _stop(self, instance: Instance, why: str) -> None:
        self.instances.remove(instance)
        await asyncio.to_thread(remove_quietly, self.engine, instance.result.name)
        self.emit({"event": "stopped", "instance": instance.result.name, "reason": why, "served": instance.served,
                   "instances": len(self.instances)})

    async def _reaper(self) -> None:
        while not self.stopping:
            await asyncio.sleep(min(1.0, self.opts.idle / 2))
            now = time.monotonic()
            for inst in list(self.instances):
                idle_for = now - inst.last_used
                if inst.active == 0 and idle_for > self.opts.idle and len(self.instances) > self.opts.min_warm:
                    await self._stop(inst, f"idle for {idle_for:.1f}s")
            async with self.changed:
                self._maybe_start()  # keep min_warm

    # -- connections --------------------------------------------------------------------------------------------------
    async def _acquire(self) -> Instance | None:
        deadline = time.monotonic() + self.opts.wait_timeout
        async with self.changed:
            self.waiting += 1
            try:
                while (inst := self._ready()) is None:
                    self._maybe_start()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.stopping:
                        return None
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=remaining)
                inst.active += 1
                return inst
            finally:
                self.waiting -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inst = await self._acquire()
        try:
            if inst is None:
                self.emit({"event": "rejected", "reason": f"no instance ready within {self.opts.wait_timeout:g}s"})
                if self.http:
                    writer.write(HTTP_503)
                    await writer.drain()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(inst.host, inst.port)
            except OSError as exc:
                self.emit({"event": "connect_failed", "instance": inst.result.name, "error": str(exc)})
                if self.http:
                    writer.write(HTTP_503)
                    await writer.drain()
                return
            inst.served += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if inst is not None:
                inst.active -= 1
                inst.last_used = time.monotonic()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        server = await asyncio.start_server(self._handle, self.opts.listen_host, self.opts.listen_port,
                                            reuse_address=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.emit({"event": "listening", "address": f"{self.opts.listen_host}:{self.opts.listen_port}",
                   "app": self.opts.app, "container_port": self.port})
        reaper = loop.create_task(self._reaper())
        async with self.changed:
            self._maybe_start()
        try:
            await stop.wait()
        finally:
            self.stopping = True
            server.close()
            reaper.cancel()
            if self.starting is not None:
                with contextlib.suppress(Exception):
                    await self.starting
            for inst in list(self.instances):
                await self._stop(inst, "shutdown")
            async with self.changed:
                self.changed.notify_all()
            self.emit({"event": "shutdown"})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass


def serve(opts: ServeOptions, *, engine: Engine, store: SnapshotStore, spec: AppSpec | None,
          emit: Callable[[Event], None]) -> None:
    """Run the front until SIGINT/SIGTERM; every instance it started is removed before it returns."""
    front = Front(opts, engine=engine, store=store, spec=spec, emit=emit)
    try:
        asyncio.run(front.run())
    except OSError as exc:
        raise UsageError(f"cannot listen on {opts.listen_host}:{opts.listen_port}: {exc.strerror or exc}") from exc
