"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from warmstart.cache.store import SnapshotStore, default_cache_dir
from warmstart.engines import Engine, resolve_engine
from warmstart.errors import UsageError
from warmstart.spec import AppSpec, PortBinding, parse_port_binding

CacheDir = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Snapshot cache directory [default: $WARMSTART_CACHE or /var/lib/warmstart]",
                 show_default=False),
]
EngineOpt = Annotated[
    Optional[str], typer.Option("--engine", help="Container engine: podman [default: $WARMSTART_ENGINE or auto]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout for scripts.")]
SpecFile = Annotated[
    Optional[Path], typer.Option("--file", "-f", help="App spec file [default: ./warmstart.toml if present].")
]


def load_spec_file(path: Path | None) -> dict[str, AppSpec]:
    """Apps of the given spec file, or of ./warmstart.toml when it exists, else none."""
    if path is None:
        path = Path("warmstart.toml")  # specfile.DEFAULT_FILE, without importing the parser when there is none
        if not path.exists():
            return {}
    from warmstart import specfile

    return specfile.load(path)


def open_store(cache_dir: Path | None) -> SnapshotStore:
    return SnapshotStore(cache_dir or default_cache_dir()).open()


def engine_for(choice: str | None) -> Engine:
    return resolve_engine(choice).engine


def port_bindings(values: list[str] | None) -> list[PortBinding]:
    return [parse_port_binding(v) for v in values or []]


def require(value: str | None, flag: str) -> str:
    if not value:
        raise UsageError(f"missing option {flag}")
    return value
