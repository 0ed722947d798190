"""Readiness probes, retried with tenacity until they pass N times in a row, the deadline passes, or the
container dies.

On failure the error says what was awaited, for how long, what the last attempt saw, the container's status and
its last log lines (the testcontainers LogMessageWaitStrategy idea).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

from warmstart.core.spec import HttpCall, ProbeSpec
from warmstart.engines.base import Engine
from warmstart.errors import EngineError, ReadinessError


class NotReady(Exception):
    """One probe attempt failed; tenacity tries again."""


class ContainerGone(Exception):
    """The container stopped while being probed; waiting longer cannot help."""


def preload() -> None:
    """Import what probing needs (tenacity, http.client: ~17 ms) in a background thread. `run` calls this just
    before the engine call, which blocks in a subprocess: the imports are then done by the time probing starts,
    instead of adding to time-to-ready."""

    def load() -> None:
        import http.client  # noqa: F401

        import tenacity  # noqa: F401

    threading.Thread(target=load, name="warmstart-preload", daemon=True).start()


def http_request(host: str, port: int, call: HttpCall, *, timeout: float) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body). Raises OSError / HTTPException on transport errors."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        body = call.body.encode() if call.body is not None else None
        headers = {"User-Agent": "warmstart"}
        if call.body is not None:
            headers["Content-Type"] = "application/json" if call.body.lstrip().startswith(("{", "[")) else "text/plain"
        conn.request(call.method, call.path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def make_check(
    probe: ProbeSpec, *, engine: Engine, container: str, address: tuple[str, int] | None
) -> Callable[[], None]:
    """One attempt of `probe` against a container; the returned callable raises NotReady with what it saw."""
    attempt_timeout = max(0.5, min(2.0, probe.timeout))

    def http_check() -> None:
        import http.client

        assert address is not None
        try:
            status, body = http_request(*address, HttpCall(path=probe.path), timeout=attempt_timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise NotReady(f"{type(exc).__name__}: {exc}") from exc
        lo, hi = probe.status
        if not lo <= status <= hi:
            raise NotReady(f"HTTP {status}")
        if probe.body and not re.search(probe.body, body.decode(errors="replace")):
            raise NotReady(f"HTTP {status} but body did not match {probe.body!r}: {body[:80]!r}")

    def tcp_check() -> None:
        # A connection that is closed at once is not a listening app: docker's userland proxy accepts on the
        # host port and then closes when nothing listens behind it. A live server either waits for the client
        # (the read times out) or greets it (data).
        assert address is not None
        try:
            with socket.create_connection(address, timeout=attempt_timeout) as conn:
                conn.settimeout(0.1)
                try:
                    if conn.recv(1) == b"":
                        raise NotReady("connection accepted and closed at once (nothing listening behind it)")
                except TimeoutError:
                    return
        except OSError as exc:
            raise NotReady(f"{type(exc).__name__}: {exc}") from exc

    def exec_check() -> None:
        try:
            result = engine.exec(container=container, command=probe.command, timeout=max(5.0, attempt_timeout))
        except EngineError as exc:
            raise NotReady(str(exc)) from exc
        if result.exit_code != 0:
            raise NotReady(f"exit code {result.exit_code}: {result.output[-200:]}")

    def log_check() -> None:
        assert probe.pattern is not None
        if not re.search(probe.pattern, engine.logs(container=container, tail=1000), re.MULTILINE):
            raise NotReady("no matching log line yet")

    return {"http": http_check, "tcp": tcp_check, "exec": exec_check, "log": log_check}[probe.kind]


INIT_PREFIX = "warmstart-init: "  # how sandbox-init/main.go's fail() starts each line it prints


def init_cause(logs: str) -> str:
    """The last failure our init printed (e.g. "restore: putting back the app's files: refused archive member
    ..."), which says why better than its exit code: the first line of it, or "" where it printed none."""
    lines = [ln.split(INIT_PREFIX, 1)[1] for ln in logs.splitlines() if INIT_PREFIX in ln]
    failures = [ln for ln in lines if not ln.startswith("restored pid")]
    return failures[-1].strip()[:500] if failures else ""


def wait_ready(
    probe: ProbeSpec,
    *,
    check: Callable[[], None],
    alive: Callable[[], str | None],
    diagnostics: Callable[[], tuple[str, str]],
) -> float:
    """Block until `check` passes `probe.successes` times in a row; returns the seconds waited.

    `alive` returns None while the container runs or its status once it has stopped (asked about once a second:
    each call costs an engine round trip); `diagnostics` returns (status, last log lines) for the error message.
    """
    start = time.monotonic()
    last_alive_check = start
    last_seen = "no attempt yet"
    streak = 0

    def attempt() -> None:
        nonlocal last_alive_check, last_seen, streak
        now = time.monotonic()
        if now - last_alive_check >= 1.0:
            last_alive_check = now
            status = alive()
            if status is not None:
                raise ContainerGone(status)
        try:
            check()
        except NotReady as exc:
            streak = 0
            last_seen = str(exc)
            raise
        streak += 1
        if streak < probe.successes:
            last_seen = f"{streak} of {probe.successes} successes in a row"
            raise NotReady(last_seen)

    from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    retrying = Retrying(
        stop=stop_after_delay(probe.timeout),
        wait=wait_fixed(probe.interval),
        retry=retry_if_exception_type(NotReady),
    )
    try:
        retrying(attempt)
    except RetryError:
        status, logs = diagnostics()
        raise ReadinessError(
            f"not ready after {probe.timeout:g}s: awaited {probe.describe()}; last attempt: {last_seen}; "
            f"container status: {status}",
            details=logs,
            hint="check the app's log lines above; raise the probe timeout if it is just slow",
        ) from None
    except ContainerGone as exc:
        _, logs = diagnostics()
        cause = init_cause(logs)
        raise ReadinessError(
            f"container stopped before it became ready ({exc}{': ' + cause if cause else ''}); awaited "
            f"{probe.describe()}",
            details=logs,
        ) from None
    return time.monotonic() - start
