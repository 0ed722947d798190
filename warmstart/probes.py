"""Readiness probes, retried with tenacity until they pass, the deadline passes, or the container dies.

On failure the error says what was awaited, for how long, what the last attempt saw, the container's status and
its last log lines (the testcontainers LogMessageWaitStrategy idea).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from warmstart.errors import ReadinessError
from warmstart.spec import ProbeSpec


class NotReady(Exception):
    """One probe attempt failed; tenacity tries again."""


class ContainerGone(Exception):
    """The container stopped while being probed; waiting longer cannot help."""


def check_once(probe: ProbeSpec, host: str, port: int) -> None:
    """One attempt; raises NotReady with what was seen."""
    attempt_timeout = max(0.5, min(2.0, probe.timeout))
    try:
        if probe.kind == "tcp":
            with socket.create_connection((host, port), timeout=attempt_timeout):
                return
        conn = http.client.HTTPConnection(host, port, timeout=attempt_timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "warmstart-probe"})
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        raise NotReady(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= resp.status < 300:
        raise NotReady(f"HTTP {resp.status}")


def wait_ready(
    probe: ProbeSpec,
    *,
    host: str,
    port: int,
    alive: Callable[[], str | None],
    diagnostics: Callable[[], tuple[str, str]],
    timeout: float | None = None,
) -> float:
    """Block until `probe` passes; returns the seconds waited.

    `host`:`port` is where the probed container port is published, `alive` returns None while the container runs or its status when it
    has stopped (checked about once a second, since each check costs an engine call), `diagnostics` returns
    (status, last log lines) for the error message.
    """
    deadline = probe.timeout if timeout is None else timeout
    start = time.monotonic()
    last_alive_check = start
    last_seen = "no attempt yet"

    def attempt() -> None:
        nonlocal last_alive_check, last_seen
        now = time.monotonic()
        if now - last_alive_check >= 1.0:
            last_alive_check = now
            status = alive()
            if status is not None:
                raise ContainerGone(status)
        try:
            check_once(probe, host, port)
        except NotReady as exc:
            last_seen = str(exc)
            raise

    retrying = Retrying(
        stop=stop_after_delay(deadline),
        wait=wait_fixed(probe.interval),
        retry=retry_if_exception_type(NotReady),
        reraise=False,
    )
    try:
        retrying(attempt)
    except RetryError:
        status, logs = diagnostics()
        raise ReadinessError(
            f"not ready after {deadline:g}s: awaited {probe.describe()}; last attempt: {last_seen}; container status: {status}",
            details=logs,
            hint="check the app's logs above; raise --ready-timeout if it is just slow",
        ) from None
    except ContainerGone as exc:
        status, logs = diagnostics()
        raise ReadinessError(
            f"container stopped before it became ready ({exc}); awaited {probe.describe()}",
            details=logs,
        ) from None
    return time.monotonic() - start
