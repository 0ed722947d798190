"""Warm-up before the checkpoint: real traffic so JITs compile, caches fill and lazy imports happen, so that
the snapshot holds a service that is fast on its first request, not just started."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass

from warmstart.core.spec import WarmupSpec
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import EngineError, WarmupError
from warmstart.runtime.containers import published, status_and_logs
from warmstart.runtime.probes import http_request


@dataclass(frozen=True)
class WarmupResult:
    requests: int
    seconds: float


def run_warmup(spec: WarmupSpec, *, engine: Engine, state: ContainerState) -> WarmupResult:
    """Send the requests (repeat times, or until duration), then run the command; any error fails the warm-up."""
    start = time.monotonic()
    deadline = start + spec.timeout
    sent = 0
    rounds = 0
    while spec.requests:
        if spec.duration is not None:
            if time.monotonic() - start >= spec.duration:
                break
        elif rounds >= spec.repeat:
            break
        for call in spec.requests:
            if time.monotonic() > deadline:
                raise WarmupError(f"warm-up did not finish within {spec.timeout:g}s ({sent} requests sent)")
            address = published(state, call.port)
            try:
                status, body = http_request(*address, call, timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                _, logs = status_and_logs(engine, state.name)
                raise WarmupError(f"warm-up request {call.method} {call.path} failed after {sent} requests: {exc}",
                                  details=logs) from exc
            if not 200 <= status < 400:
                raise WarmupError(f"warm-up request {call.method} {call.path} answered HTTP {status} "
                                  f"(after {sent} requests): {body[:200].decode(errors='replace')}")
            sent += 1
        rounds += 1
    if spec.command:
        remaining = max(1.0, deadline - time.monotonic())
        try:
            result = engine.exec(container=state.name, command=spec.command, timeout=remaining)
        except EngineError as exc:
            raise WarmupError(f"warm-up command failed: {exc}") from exc
        if result.exit_code != 0:
            raise WarmupError(f"warm-up command {' '.join(spec.command)} exited with {result.exit_code}",
                              details="\n".join(f"out: {ln}" for ln in result.output.splitlines()[-10:]))
    return WarmupResult(requests=sent, seconds=round(time.monotonic() - start, 3))
