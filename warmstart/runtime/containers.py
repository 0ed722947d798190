"""Container steps shared by build and launch: remove-on-failure ownership, probing, and diagnostics."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from warmstart.core import labels, sandbox
from warmstart.core.labels import pid_alive
from warmstart.core.signals import shielded
from warmstart.core.spec import ProbeSpec
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import EngineError, ReadinessError
from warmstart.runtime.probes import make_check, wait_ready


@contextlib.contextmanager
def removed_on_failure(engine: Engine, name: str) -> Iterator[None]:
    """Remove container `name` (by the name we gave it) if the block fails or is interrupted."""
    try:
        yield
    except BaseException:
        remove_quietly(engine, name)
        raise


def remove_quietly(engine: Engine, name: str) -> None:
    """Remove a container we started and make sure it is gone: asked once more when the engine still lists it
    (a removal racing a restore that was finishing)."""
    with shielded(), contextlib.suppress(EngineError):
        engine.remove(container=name)
        if engine.inspect(container=name) is not None:
            engine.remove(container=name)


def sweep_orphans(engine: Engine, *, app: str | None = None) -> list[str]:
    """Remove what a warmstart process killed with SIGKILL left behind (of `app`, or of every app): build
    containers whose build died (BUILD_PID), and the instances and pre-started sandboxes of a `serve` that died
    (OWNER_PID). The next build, serve or `stop --app/--all` calls it: crash-only, nothing waits for a cleanup."""
    wanted = {labels.MANAGED: "true", **({labels.APP: app} if app else {})}
    removed = []
    for state in engine.list(labels=wanted):
        build_pid, owner = state.labels.get(labels.BUILD_PID, ""), state.labels.get(labels.OWNER_PID, "")
        # A restored whole container keeps its build's labels, BUILD_PID included: only build-named ones count.
        dead_build = state.name.startswith(labels.BUILD_PREFIX) and build_pid.isdigit() and not pid_alive(
            int(build_pid))
        if dead_build or (owner.isdigit() and not pid_alive(int(owner))):
            remove_quietly(engine, state.name)
            removed.append(state.name)
    return removed


def describe_status(s: ContainerState | None) -> str:
    """"running", "removed" or "exited (exit code 121: CRIU could not restore ...)"."""
    if s is None:
        return "removed"
    if s.running:
        return s.status
    meaning = sandbox.explain_exit(s.exit_code) if s.labels.get(labels.INIT) else ""
    return f"{s.status} (exit code {s.exit_code}{': ' + meaning if meaning else ''})"


def status_and_logs(engine: Engine, container: str, tail: int = 20) -> tuple[str, str]:
    """The container's status and its last log lines, prefixed for error details."""
    s = engine.inspect(container=container)
    status = describe_status(s)
    logs = engine.logs(container=container, tail=tail) if s else ""
    return status, "\n".join(f"log: {ln}" for ln in logs.splitlines()) or "log: (no output)"


def published(state: ContainerState, port: int) -> tuple[str, int]:
    address = state.host_address(port)
    if address is None:
        raise ReadinessError(f"container {state.name} does not publish port {port}/tcp")
    return address


def probe_container(
    engine: Engine, *, container: str, probe: ProbeSpec | None, known: ContainerState | None = None,
    after_init: bool = False,
) -> ContainerState:
    """Wait until a started container passes `probe` (or just runs, without one); returns its state then.

    `known` (what the caller already knows of a container it just started) saves an engine round trip on the
    restore path; without it the container is inspected first. `after_init`: a restored sandbox whose init runs
    the app's afterRestore (the JVM helper) is ready only once the init says it is done, since the app may answer
    its probe before (an app that keeps its server open across the checkpoint). Raises ReadinessError with the
    container's status and last log lines."""
    state = known if known is not None and probe is not None else engine.inspect(container=container)
    if state is None or not state.running:
        status, logs = status_and_logs(engine, container)
        raise ReadinessError(f"container {container} is not running ({status})", details=logs)
    if probe is None:
        return state
    if probe.kind == "log" and state.restored and probe.pattern:
        # The app printed its ready line before the checkpoint and will not print it again: a sandbox instance is
        # ready once its init says the app runs (the whole-container path keeps the old log, so the app's own
        # line is still there).
        probe = dataclasses.replace(probe, pattern=f"(?:{probe.pattern})|(?:{sandbox.RESTORED_LINE})")
    address = published(state, probe.port) if probe.kind in ("http", "tcp") else None

    def alive() -> str | None:
        s = engine.inspect(container=container)
        return None if s is not None and s.running else describe_status(s)

    check = make_check(probe, engine=engine, container=container, address=address)
    if after_init:
        init_done = make_check(ProbeSpec(kind="log", pattern=sandbox.RESTORED_LINE), engine=engine,
                               container=container, address=None)
        app_check, seen = check, list[bool]()

        def check() -> None:
            if not seen:
                init_done()
                seen.append(True)
            app_check()
    wait_ready(probe, check=check, alive=alive, diagnostics=lambda: status_and_logs(engine, container))
    return state
