"""Use cases `ps` and `stop`: the instances warmstart started, found by our labels and names only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warmstart.core import labels
from warmstart.core.spec import validate_seconds
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import UsageError


@dataclass(frozen=True)
class Instance:
    app: str
    name: str
    container: str
    mode: str  # restored | cold | pooled (a pre-started sandbox still waiting for its trigger) | debug
    status: str
    image: str
    created: str  # the engine's ISO 8601 time
    snapshot: str  # APP:TAG it was restored from ("" for cold starts and container-mode restores)
    exit_code: int
    labels: dict[str, str]
    ports: dict[str, str]
    ip: str = ""  # its address on the engine's network ("" when none or several) and MAC
    mac: str = ""

    @classmethod
    def from_state(cls, s: ContainerState) -> Instance:
        return cls(
            app=s.labels.get(labels.APP, ""),
            name=s.name,
            container=s.id,
            mode=_mode(s),
            status=s.status,
            image=s.image,
            created=s.created,
            snapshot=s.labels.get(labels.SNAPSHOT, ""),
            exit_code=s.exit_code,
            labels=dict(s.labels),
            ports={k: f"{ip or '0.0.0.0'}:{port}" for k, (ip, port) in s.ports.items()},
            ip=s.ip,
            mac=s.mac,
        )


def _mode(s: ContainerState) -> str:
    if s.labels.get(labels.MODE) == "debug":  # `warmstart debug`: a stopped, isolated restore
        return "debug"
    if s.labels.get(labels.MODE) == "pooled":  # waiting while its trigger FIFO exists; activation removes it
        return "pooled" if os.path.exists(s.labels.get(labels.TRIGGER, "")) else "restored"
    return "restored" if s.restored else "cold"


def list_instances(*, engine: Engine, app: str | None = None, cache: str | None = None) -> list[Instance]:
    """Our instances (of `app`; launched from the cache dir `cache`, when given: instances that predate the cache
    label, and restored whole containers, which keep their build's labels, count as every cache's)."""
    wanted = {labels.MANAGED: "true"}
    if app:
        wanted[labels.APP] = app
    if cache:  # first, what a killed `checkpoint --stop` or `migrate` left frozen in this cache: thawed
        from warmstart.runtime.frozen import thaw_orphans

        thaw_orphans(engine, Path(cache))
    states = engine.list(labels=wanted)
    return sorted(
        (Instance.from_state(s) for s in states
         if (s.name.startswith(labels.INSTANCE_PREFIX) or s.labels.get(labels.INSTANCE) == "true")
         and (cache is None or s.labels.get(labels.CACHE, cache) == cache)),
        key=lambda i: (i.app, i.name),
    )


def inspect_instance(*, engine: Engine, name: str) -> Instance:
    """One of our instances, or UsageError when the name is not one."""
    ours(engine=engine, names=[name])
    state = engine.inspect(container=name)
    if state is None:
        raise UsageError(f"instance {name} is gone")
    return Instance.from_state(state)


def ours(*, engine: Engine, names: list[str], app: str | None = None, cache: str | None = None) -> list[str]:
    """The named instances, checked to be warmstart's (or, when no names are given, all of an app's, or all:
    launched from the cache dir `cache` when given, as `ps` lists them)."""
    if not names:
        return sorted(i.name for i in list_instances(engine=engine, app=app, cache=cache))
    known = {i.name for i in list_instances(engine=engine, app=app)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"not a warmstart instance: {', '.join(unknown)} (see `warmstart ps`)")
    return names


def stop_instances(*, engine: Engine, names: list[str], app: str | None = None, all_: bool = False,
                   timeout: float = 0, cache: str | None = None) -> dict[str, int | None]:
    """Stop and remove the named instances (or all of an app's, or all); refuses names that are not warmstart
    instances. With `timeout`, each gets SIGTERM first and is killed only after that many seconds (the init of a
    restored instance forwards it to the app). `--app`/`--all` reach only the instances of the cache dir `cache`
    (when given), as `ps` shows them. Returns how each ended: its exit code (None when removed at once)."""
    if not names and not app and not all_:
        raise UsageError("name instances to stop, or pass --app APP or --all")
    if not timeout >= 0:
        raise UsageError("-t/--time must be 0 or more seconds")
    validate_seconds(timeout, "-t/--time", zero_ok=True)
    ended: dict[str, int | None] = {}
    if not names:
        from warmstart.runtime.containers import sweep_orphans

        ended.update(dict.fromkeys(sweep_orphans(engine, app=app)))  # what a SIGKILLed build or serve left
    for name in ours(engine=engine, names=names, app=app, cache=cache):
        if name in ended:
            continue
        code = None
        if timeout:
            engine.stop(container=name, timeout=timeout)
            state = engine.inspect(container=name)
            code = state.exit_code if state is not None else None
        engine.remove(container=name)
        ended[name] = code
    return ended
