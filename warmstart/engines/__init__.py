"""Engines behind one interface (base), podman and docker, the resolver below that picks one and says where the
choice came from (choice), and `run`'s early image query (early). May import: errors, core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from warmstart.engines.choice import ENGINES, ENV_VAR, requested_engine
from warmstart.errors import EngineUnavailable, UsageError

if TYPE_CHECKING:  # the engine modules are imported when an engine is made: see warmstart.engines.early for why
    from warmstart.engines.base import Engine


__all__ = ["ENGINES", "ENV_VAR", "ResolvedEngine", "requested_engine", "resolve_engine"]


@dataclass(frozen=True)
class ResolvedEngine:
    engine: Engine
    source: str  # e.g. "--engine flag", "$WARMSTART_ENGINE", "auto-detected"


def _make(name: str) -> Engine:
    if name == "podman":
        from warmstart.engines.podman import PodmanEngine

        return PodmanEngine()
    if name == "docker":
        from warmstart.engines.docker import DockerEngine

        return DockerEngine()
    raise UsageError(f"unknown engine {name!r}: supported engines are {', '.join(ENGINES)}")


def resolve_engine(choice: str | None = None) -> ResolvedEngine:
    """Precedence: explicit choice (flag) > $WARMSTART_ENGINE > auto-detection (podman on PATH, else a reachable
    docker daemon)."""
    requested = requested_engine(choice)
    if requested:
        return ResolvedEngine(_make(requested[0]), requested[1])
    from warmstart.engines import podman

    if podman.available():
        return ResolvedEngine(_make("podman"), "auto-detected (podman on PATH)")
    from warmstart.engines import docker  # only when podman is absent: importing it costs the restore path 2 ms

    if docker.available():
        return ResolvedEngine(_make("docker"), "auto-detected (docker daemon socket)")
    raise EngineUnavailable("no container engine found: neither podman on PATH nor a docker daemon",
                            hint="run scripts/setup-host")
