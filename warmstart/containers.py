"""Container steps shared by build and launch: remove-on-failure ownership and probing a started container."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import EngineError, ReadinessError
from warmstart.probes import wait_ready
from warmstart.signals import shielded
from warmstart.spec import ProbeSpec


@contextlib.contextmanager
def removed_on_failure(engine: Engine, name: str) -> Iterator[None]:
    """Remove container `name` (by the name we gave it) if the block fails or is interrupted."""
    try:
        yield
    except BaseException:
        with shielded(), contextlib.suppress(EngineError):
            engine.remove(container=name)
        raise


def remove_quietly(engine: Engine, name: str) -> None:
    with shielded(), contextlib.suppress(EngineError):
        engine.remove(container=name)


def probe_container(engine: Engine, *, container: str, probe: ProbeSpec | None) -> ContainerState:
    """Wait until a started container passes `probe` (or just runs, without one); returns its state then.

    Raises ReadinessError with the container's status and last log lines."""
    state = engine.inspect(container=container)
    if state is None or not state.running:
        status = "missing" if state is None else f"{state.status} (exit code {state.exit_code})"
        raise ReadinessError(
            f"container {container} is not running ({status}); awaited {probe.describe()}",
            details=engine.logs(container=container) if state else "",
        )
    if probe is None:
        return state
    address = state.host_address(probe.port)
    if address is None:
        raise ReadinessError(f"container {container} does not publish port {probe.port}/tcp, which the probe needs")

    def alive() -> str | None:
        s = engine.inspect(container=container)
        if s is None:
            return "removed"
        return None if s.running else f"{s.status} (exit code {s.exit_code})"

    def diagnostics() -> tuple[str, str]:
        s = engine.inspect(container=container)
        status = "removed" if s is None else (s.status if s.running else f"{s.status} (exit code {s.exit_code})")
        logs = engine.logs(container=container, tail=20)
        return status, "\n".join(f"log: {ln}" for ln in logs.splitlines()) or "log: (no output)"

    wait_ready(probe, host=address[0], port=address[1], alive=alive, diagnostics=diagnostics)
    return state
