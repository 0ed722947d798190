"""Use case `serve`: a scale-from-zero TCP front. It accepts connections on a listen address; when no instance
is running it restores one (falling back cold as `run` does) and forwards the waiting connections once it is
ready; it stops instances idle for longer than `idle` seconds, keeps `min_warm` ready ahead of demand, and never
runs more than `max_instances`. A connection that cannot be served within `wait_timeout` gets a clean HTTP 503
(HTTP apps) or a closed connection, never a hang.

Scaling: the wanted number of instances is the open demand (waiting plus in-flight connections) divided by
`concurrency` per instance, at least `min_warm`, at most `max_instances`; one start at a time; connections go to the
ready instance with the fewest open connections. A failed start backs off (0.5 s doubling to 30 s) instead of
being retried at once while connections wait.

Pre-started sandboxes (`pool`, default 1): containers started ahead of demand whose init waits with the snapshot's
files already in place; a request from zero then costs only CRIU's restore (tens of ms), not a container start.
They are visible in `ps` (mode "pooled"), refilled after use, removed on shutdown, and swept when a serve process
that owned them died. Sandbox snapshots only; without one, starts fall back to `run`'s path.

No connection hangs: connecting upstream times out after CONNECT_TIMEOUT (then 503), an upstream that sends no
first byte within `wait_timeout` gets the client a 503, and a connection with no traffic either way for
`conn_idle` seconds is closed; both sides are always closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warmstart.cache.store import SnapshotStore
from warmstart.core import labels, sandbox
from warmstart.core.spec import AppSpec, validate_seconds
from warmstart.engines.base import Engine
from warmstart.errors import UsageError, WarmstartError
from warmstart.restore.launch import LaunchResult, known_app, launch, usable_snapshot
from warmstart.runtime.containers import remove_quietly, sweep_orphans
from warmstart.security.signing import NO_POLICY, TrustPolicy
from warmstart.serve import moves
from warmstart.serve.admin import handle_admin
from warmstart.serve.metrics import Metrics
from warmstart.serve.pool import Prestarted, activate, prestart

Event = dict[str, Any]
HTTP_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n\r\nno instance became ready in time")
# A request whose upstream connection failed before any byte of an answer is sent again, to another instance where
# there is one, at most RETRIES times, when it is safe to: an idempotent method (RFC 9110 9.2.2, as nginx's
# proxy_next_upstream decides) and at most REPLAY_LIMIT bytes sent so far. Otherwise the client gets the 503.
RETRIES = 2
REPLAY_LIMIT = 64 * 1024
IDEMPOTENT = (b"GET ", b"HEAD ", b"OPTIONS ", b"TRACE ", b"PUT ", b"DELETE ")
CONNECT_TIMEOUT = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


@dataclass
class Instance:
    result: LaunchResult
    host: str
    port: int
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    served: int = 0
    remote: bool = False  # migrated to another host (moves.py): stopped there through --migrate-via


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
    concurrency: int = 10  # open connections per instance before another is started (up to max_instances)
    pool: int = 1  # pre-started sandboxes kept ready
    conn_idle: float = 300.0  # close a proxied connection with no traffic either way for this long
    trust: TrustPolicy = NO_POLICY  # which snapshots' signatures are accepted
    admin: tuple[str, int] | None = None  # where /healthz and /metrics are served (none by default)
    drain: float = 30.0  # on SIGTERM: seconds open connections may take to finish before instances are removed
    migrate_to: str | None = None  # POST /migrate on the admin address moves the instance there (moves.py)
    migrate_via: tuple[str, ...] = ()  # the command that runs warmstart on the destination
    migrate_post_copy: bool = False  # migrate post-copy: connections are held until the destination answers only


def parse_listen(text: str, *, flag: str = "--listen") -> tuple[str, int]:
    """HOST:PORT. ":PORT" binds every interface, as docker's -p does (`127.0.0.1:PORT` for loopback only)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid {flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 or :8080 (all interfaces)")
    return host or "0.0.0.0", int(port)


class Front:
    def __init__(self, opts: ServeOptions, *, engine: Engine, store: SnapshotStore, spec: AppSpec | None,
                 emit: Callable[[Event], None]) -> None:
        if opts.max_instances < 1:
            raise UsageError("--max must be at least 1")
        if not 0 <= opts.min_warm <= opts.max_instances:
            raise UsageError("--min-warm must be between 0 and --max")
        for value, flag in ((opts.idle, "--idle"), (opts.wait_timeout, "--wait-timeout"),
                            (opts.conn_idle, "--conn-idle")):
            validate_seconds(value, flag)
        if opts.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if opts.pool < 0:
            raise UsageError("--pool must be 0 or more")
        if opts.drain < 0:
            raise UsageError("--drain must be 0 or more")
        self.opts = opts
        self.engine = engine
        self.store = store
        self.spec = known_app(opts.app, store=store, spec=spec).spec
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
        self.backoff = 0.0  # seconds to wait after the last failed start (0: none failed)
        self.backoff_until = 0.0
        self.pool: list[Prestarted] = []
        self.refilling = False
        self.draining = False
        self.migrating: Instance | None = None  # out of the ready set while it moves: connections wait for it
        self.metrics = Metrics()

    # -- scaling ------------------------------------------------------------------------------------------------------
    def _ready(self, avoid: Instance | None = None) -> Instance | None:
        usable = [i for i in self.instances if i is not self.migrating]
        others = [i for i in usable if i is not avoid]
        return min(others or usable, key=lambda i: i.active, default=None)

    def wanted(self) -> int:
        """How many instances the current demand calls for."""
        demand = self.waiting + sum(i.active for i in self.instances)
        return min(self.opts.max_instances, max(self.opts.min_warm, math.ceil(demand / self.opts.concurrency)))

    def _maybe_start(self) -> None:
        if (self.stopping or self.starting is not None or self.migrating is not None
                or len(self.instances) >= self.wanted()):
            return
        loop = asyncio.get_running_loop()
        delay = self.backoff_until - time.monotonic()
        if delay > 0:  # backing off after a failed start: look again when the back-off ends
            loop.call_later(delay, self._poke)
            return
        self.starting = loop.create_task(self._start())

    def _poke(self) -> None:
        async def again() -> None:
            async with self.changed:
                self._maybe_start()

        if not self.stopping:
            asyncio.get_running_loop().create_task(again())

    # -- the pool of pre-started sandboxes --------------------------------------------------------------------------
    def _refill(self) -> None:
        if self.refilling or self.stopping or len(self.pool) >= self.opts.pool:
            return
        self.refilling = True
        asyncio.get_running_loop().create_task(self._prestart())

    async def _prestart(self) -> None:
        try:
            snap, why = await asyncio.to_thread(usable_snapshot, self.spec, engine=self.engine, store=self.store,
                                                   trust=self.opts.trust)
            if snap is None or snap.manifest.mode != sandbox.SANDBOX or snap.manifest.encryption:
                self.emit({"event": "pool_unavailable", "reason": why or f"snapshot {snap.ref if snap else ''} is "
                           "not a sandbox snapshot, or is encrypted (its clear text would wait in memory)"})
                return
            pre = await asyncio.to_thread(prestart, self.spec, snap, engine=self.engine, store=self.store)
            if self.stopping:
                await asyncio.to_thread(remove_quietly, self.engine, pre.state.name)
                return
            self.pool.append(pre)
            self.emit({"event": "pooled", "instance": pre.state.name, "pool": len(self.pool)})
        except WarmstartError as exc:
            self.emit({"event": "pool_failed", "error": str(exc)})
            return
        finally:
            self.refilling = False
        self._refill()

    def _launch(self) -> LaunchResult:
        """A new instance: a pooled sandbox activated when one is ready (the fast path), else `run`'s path."""
        while self.pool:
            pre = self.pool.pop(0)
            try:
                return activate(pre, engine=self.engine)
            except WarmstartError as exc:
                self.emit({"event": "pool_failed", "instance": pre.state.name, "error": str(exc)})
        return launch(self.opts.app, engine=self.engine, store=self.store, ports=[], spec=self.spec,
                      trust=self.opts.trust, extra_labels={labels.OWNER_PID: str(os.getpid())})

    async def _start(self) -> Instance | None:
        t = time.monotonic()
        instance = None
        try:
            result = await asyncio.to_thread(self._launch)
            asyncio.get_running_loop().call_soon(self._refill)
            host, _, port = result.ports[f"{self.port}/tcp"].rpartition(":")
            instance = Instance(result, "127.0.0.1" if host in ("0.0.0.0", "") else host, int(port))
            if self.stopping:
                await asyncio.to_thread(remove_quietly, self.engine, result.name)
                return None
            self.instances.append(instance)
            self.metrics.started(result.mode, result.ready_seconds)
            self.backoff = 0.0
            self.emit({"event": "started", "instance": result.name, "mode": result.mode,
                       "ready_seconds": result.ready_seconds, "reason": result.reason,
                       "seconds_since_request": round(time.monotonic() - t, 3), "instances": len(self.instances)})
        except WarmstartError as exc:
            self.metrics.start_failures.inc()
            self.backoff = min(BACKOFF_MAX, self.backoff * 2 or BACKOFF_FIRST)
            self.backoff_until = time.monotonic() + self.backoff
            self.emit({"event": "start_failed", "error": str(exc), "retry_in_seconds": self.backoff})
        finally:
            async with self.changed:
                self.starting = None
                self._maybe_start()
                self.changed.notify_all()
        return instance

    async def _stop(self, instance: Instance, why: str) -> None:
        self.instances.remove(instance)
        if instance.remote:
            await asyncio.to_thread(moves.stop_remote, self, instance)
        else:
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
    async def _acquire(self, avoid: Instance | None = None) -> Instance | None:
        """A ready instance for one connection (the least busy; not `avoid` where another is ready), or None when
        none became ready within wait_timeout."""
        deadline = time.monotonic() + self.opts.wait_timeout
        async with self.changed:
            self.waiting += 1
            try:
                while (inst := self._ready(avoid)) is None:
                    self._maybe_start()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.stopping:
                        return None
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=remaining)
                inst.active += 1
                self._maybe_start()  # scale out when the demand now exceeds what the instances take
                return inst
            finally:
                self.waiting -= 1

    async def _reject(self, writer: asyncio.StreamWriter) -> None:
        if self.http:
            writer.write(HTTP_503)
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), timeout=CONNECT_TIMEOUT)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: forward it to an instance; when the upstream fails before answering, send it
        again where that is safe (RETRIES), else answer 503 (HTTP apps). A client is never closed unanswered."""
        accepted = time.monotonic()
        first_byte: list[float] = []
        early = bytearray()  # what the client sent before any answer: replayed on a retry
        self.metrics.connections.inc()
        inst = await self._acquire()
        try:
            for attempt in range(RETRIES + 1):
                if inst is None:
                    self.metrics.rejected.inc()
                    self.emit({"event": "rejected", "reason": f"no instance ready within {self.opts.wait_timeout:g}s"})
                    await self._reject(writer)
                    return
                outcome = await self._forward(inst, reader, writer, early, accepted, first_byte)
                if outcome == "answered":
                    return
                if outcome == "silent" or attempt == RETRIES or not self._replayable(early):
                    self.metrics.rejected.inc()
                    self.emit({"event": "rejected", "instance": inst.result.name, "reason": outcome})
                    await self._reject(writer)
                    return
                self.emit({"event": "retried", "instance": inst.result.name, "reason": outcome})
                self._release(inst, accepted, first_byte)
                failed, inst = inst, None
                inst = await self._acquire(avoid=failed)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if inst is not None:
                self._release(inst, accepted, first_byte)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    def _replayable(self, early: bytearray) -> bool:
        """Whether what the client sent so far may be sent to another instance (see RETRIES)."""
        if not early:
            return True  # nothing sent yet: any protocol may try elsewhere
        return self.http and len(early) <= REPLAY_LIMIT and bytes(early[:8]).startswith(IDEMPOTENT)

    def _release(self, inst: Instance, accepted: float, first_byte: list[float]) -> None:
        inst.active -= 1
        inst.last_used = time.monotonic()
        # The access log: one event per proxied connection (TCP level: the front does not parse HTTP).
        self.emit({"event": "served", "instance": inst.result.name,
                   "first_byte_seconds": round(first_byte[0], 4) if first_byte else None,
                   "seconds": round(time.monotonic() - accepted, 4)})

    async def _forward(self, inst: Instance, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       early: bytearray, accepted: float, first_byte: list[float]) -> str:
        """Connect to `inst`, send what the client sent so far (a retry), and proxy. Returns "answered", "silent"
        (no first byte within wait_timeout), "unreachable" (no connection) or "dropped" (the upstream ended or
        reset before its first byte)."""
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(inst.host, inst.port),
                                                          timeout=CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            self.emit({"event": "connect_failed", "instance": inst.result.name,
                       "error": str(exc) or f"no connection within {CONNECT_TIMEOUT:g}s"})
            return "unreachable"
        inst.served += 1

        def _first_byte() -> None:
            first_byte.append(time.monotonic() - accepted)
            self.metrics.first_byte.observe(first_byte[0])

        try:
            if early:
                up_writer.write(bytes(early))
            return await _proxy(reader, writer, up_reader, up_writer, first_byte=self.opts.wait_timeout,
                                idle=self.opts.conn_idle, on_first_byte=_first_byte, early=early)
        except OSError:
            return "dropped"
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(up_writer.wait_closed(), timeout=1.0)

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    async def _drain(self, server: asyncio.Server) -> None:
        """SIGTERM: stop accepting, let open connections finish (up to `drain` seconds), then shut down. /healthz
        answers 503 meanwhile, so a load balancer takes this front out first."""
        self.draining = True
        server.close()
        busy = sum(i.active for i in self.instances)
        self.emit({"event": "draining", "open_connections": busy, "timeout_seconds": self.opts.drain})
        deadline = time.monotonic() + self.opts.drain
        while sum(i.active for i in self.instances) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        server = await asyncio.start_server(self._handle, self.opts.listen_host, self.opts.listen_port,
                                            reuse_address=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        admin = None
        if self.opts.admin is not None:
            admin = await asyncio.start_server(lambda r, w: handle_admin(self, r, w), *self.opts.admin,
                                               reuse_address=True)
        self.emit({"event": "listening", "address": f"{self.opts.listen_host}:{self.opts.listen_port}",
                   "app": self.opts.app, "container_port": self.port,
                   "admin": f"{self.opts.admin[0]}:{self.opts.admin[1]}" if self.opts.admin else None})
        await asyncio.to_thread(sweep_orphans, self.engine, app=self.opts.app)  # a SIGKILLed serve's
        reaper = loop.create_task(self._reaper())
        self._refill()
        async with self.changed:
            self._maybe_start()
        try:
            await stop.wait()
            await self._drain(server)
        finally:
            self.stopping = True
            server.close()
            if admin is not None:
                admin.close()
            reaper.cancel()
            if self.starting is not None:
                with contextlib.suppress(Exception):
                    await self.starting
            for inst in list(self.instances):
                await self._stop(inst, "shutdown")
            while self.refilling:  # a sandbox being pre-started is removed by its own task once it sees stopping
                await asyncio.sleep(0.05)
            for pre in self.pool:
                await asyncio.to_thread(remove_quietly, self.engine, pre.state.name)
                shutil.rmtree(pre.ctl, ignore_errors=True)
            self.pool.clear()
            async with self.changed:
                self.changed.notify_all()
            self.emit({"event": "shutdown"})


async def _proxy(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, up_r: asyncio.StreamReader,
                 up_w: asyncio.StreamWriter, *, first_byte: float, idle: float,
                 on_first_byte: Callable[[], None] = lambda: None, early: bytearray | None = None) -> str:
    """Copy both ways until either side ends or nothing moves for `idle` seconds. Until the upstream's first byte,
    what the client sends is also kept in `early` (up to REPLAY_LIMIT + 1 bytes), and nothing of the upstream's end
    reaches the client: then "silent" when the client spoke and no first byte came within `first_byte` seconds,
    "dropped" when the upstream ended or reset first (the client can still be answered, or sent elsewhere);
    "answered" otherwise."""
    last = time.monotonic()
    got_answer = asyncio.Event()
    client_spoke = asyncio.Event()
    dropped = asyncio.Event()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
        nonlocal last
        try:
            while data := await src.read(65536):
                last = time.monotonic()
                if upstream and not got_answer.is_set():
                    on_first_byte()
                if not upstream and early is not None and not got_answer.is_set() and len(early) <= REPLAY_LIMIT:
                    early.extend(data[:REPLAY_LIMIT + 1 - len(early)])
                (got_answer if upstream else client_spoke).set()
                dst.write(data)
                await dst.drain()
            if upstream and not got_answer.is_set():
                dropped.set()
            elif dst.can_write_eof():
                dst.write_eof()
        except (OSError, RuntimeError):
            if upstream and not got_answer.is_set():
                dropped.set()

    tasks = [asyncio.ensure_future(pipe(client_r, up_w, False)), asyncio.ensure_future(pipe(up_r, client_w, True))]
    try:
        while not all(t.done() for t in tasks) and not dropped.is_set():
            await asyncio.wait(tasks, timeout=0.25)
            now = time.monotonic()
            if dropped.is_set():
                break
            if client_spoke.is_set() and not got_answer.is_set() and now - last > first_byte:
                return "silent"
            if now - last > idle:
                return "answered"
        return "dropped" if dropped.is_set() else "answered"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def serve(opts: ServeOptions, *, engine: Engine, store: SnapshotStore, spec: AppSpec | None,
          emit: Callable[[Event], None]) -> None:
    """Run the front until SIGINT/SIGTERM; every instance it started is removed before it returns."""
    front = Front(opts, engine=engine, store=store, spec=spec, emit=emit)
    try:
        asyncio.run(front.run())
    except OSError as exc:
        raise UsageError(f"cannot listen on {opts.listen_host}:{opts.listen_port}: {exc.strerror or exc}") from exc
