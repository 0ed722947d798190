"""Which engine the user asked for, and where they said it: shared by the resolver (engines/__init__.py) and by
`run`'s early query (engines/early.py), which must not import the resolver's engine modules. Stdlib only."""

from __future__ import annotations

import os

ENGINES = ("podman", "docker")
ENV_VAR = "WARMSTART_ENGINE"


def requested_engine(choice: str | None = None) -> tuple[str, str] | None:
    """The engine the user asked for and where they said it (the flag, else $WARMSTART_ENGINE); None: detect one,
    podman first."""
    if choice:
        return choice, "--engine flag"
    env = os.environ.get(ENV_VAR)
    return (env, f"${ENV_VAR}") if env else None
