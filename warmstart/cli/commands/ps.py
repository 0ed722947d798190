from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors
from warmstart.cli.output import result as show
from warmstart.runtime.instances import list_instances


@handle_errors
def ps(
    app: Annotated[str | None, typer.Option("--app", help="Only this app's instances.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only the names.")] = False,
    all_caches: Annotated[bool, typer.Option("--all-caches", help="Also instances launched from other cache dirs.")]
    = False,
    cache_dir: options.CacheDir = None,
    format_: Annotated[str, typer.Option("--format", help="table or json (docker's `--format json`).")] = "table",
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """List the instances warmstart started (mode: restored, cold, or pooled: a pre-started sandbox)."""
    from warmstart.cache.store import SnapshotStore
    from warmstart.core.layout import default_cache_dir

    cache = None if all_caches else str(SnapshotStore(cache_dir or default_cache_dir()).root)
    if format_ not in ("table", "json"):
        from warmstart.errors import UsageError

        raise UsageError(f"invalid --format {format_!r}: expected table or json")
    json_output = json_output or format_ == "json"
    instances = list_instances(engine=options.engine_for(engine), app=app, cache=cache)
    if quiet and not json_output:
        if instances:
            show("\n".join(i.name for i in instances))
        return
    if json_output:
        emit_json({"instances": [vars(i) for i in instances]})  # image, created, labels: here, not in the table
        return
    if not instances:
        show("no instances")
        return
    show(f"{'NAME':<28} {'APP':<16} {'MODE':<9} {'SNAPSHOT':<30} {'STATUS':<9} {'CREATED':<15} PORTS")
    for i in instances:
        ports = ", ".join(f"{k}->{v}" for k, v in i.ports.items())
        show(f"{i.name:<28} {i.app:<16} {i.mode:<9} {i.snapshot or '-':<30} {i.status:<9} {_ago(i.created):<15} "
             f"{ports}")


def _ago(created: str) -> str:
    """docker ps's "5 minutes ago" from the engine's ISO time (podman gives nanoseconds: cut to micro)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", created.strip()).replace("Z", "+00:00")
    text = re.sub(r" ([+-]\d{4}) [A-Z]+$", r"\1", text)  # podman's Go time format: "... +0000 UTC"
    try:
        then = datetime.fromisoformat(text)
    except ValueError:
        return created[:19] or "?"
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{max(seconds, 0)} seconds ago"
