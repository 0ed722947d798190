"""Engines behind one interface, and the resolver that picks one and says where the choice came from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from warmstart.errors import EngineUnavailable, UsageError

if TYPE_CHECKING:  # the engine modules are imported when an engine is made: see warmstart.early for why
    from warmstart.engines.base import Engine

ENGINES = ("podman", "docker")
ENV_VAR = "WARMSTART_ENGINE"

__all__ = ["ENGINES", "ResolvedEngine", "requested_engine", "resolve_engine"]


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


def requested_engine(choice: str | None = None) -> tuple[str, str] | None:
    """The engine the user asked for and where they said it (the flag, else $WARMSTART_ENGINE); None: detect one,
    podman first."""
    if choice:
        return choice, "--engine flag"
    env = os.environ.get(ENV_VAR)
    return (env, f"${ENV_VAR}") if env else None


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
