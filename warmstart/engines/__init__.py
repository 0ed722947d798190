"""Engines behind one interface, and the resolver that picks one and says where the choice came from."""

from __future__ import annotations

import os
from dataclasses import dataclass

from warmstart.engines.base import ContainerState, Engine, EngineInfo
from warmstart.errors import EngineUnavailable, UsageError

ENGINES = ("podman", "docker")
ENV_VAR = "WARMSTART_ENGINE"

__all__ = ["ContainerState", "Engine", "EngineInfo", "ResolvedEngine", "resolve_engine", "ENGINES"]


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
    if choice:
        return ResolvedEngine(_make(choice), "--engine flag")
    env = os.environ.get(ENV_VAR)
    if env:
        return ResolvedEngine(_make(env), f"${ENV_VAR}")
    from warmstart.engines import docker, podman

    if podman.available():
        return ResolvedEngine(_make("podman"), "auto-detected (podman on PATH)")
    if docker.available():
        return ResolvedEngine(_make("docker"), "auto-detected (docker daemon socket)")
    raise EngineUnavailable("no container engine found: neither podman on PATH nor a docker daemon",
                            hint="run scripts/setup-host")
