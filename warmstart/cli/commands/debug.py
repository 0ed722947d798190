"""`warmstart debug APP[:TAG]`: a stopped, isolated restore of a snapshot for a debugger."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors
from warmstart.cli.output import result as show


@handle_errors
def debug(
    ref: Annotated[str, typer.Argument(metavar="APP[:TAG]", help="The snapshot (the app's newest without a tag).")],
    volume: Annotated[list[str] | None, typer.Option("-v", "--volume", help="HOST:CONTAINER[:ro] to mount (none "
                                                     "of the app's volumes are, unless given here).")] = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Restore a snapshot into an isolated instance (loopback only, no volumes, no secrets), stopped before it runs,
    for gdb, py-spy or jcmd; any number of times from one snapshot."""
    from warmstart.restore.debug import debug_instance

    found = debug_instance(ref, engine=options.engine_for(engine), store=options.open_store(cache_dir),
                           volumes=tuple(volume or ()))
    if json_output:
        emit_json(dataclasses.asdict(found))
        return
    pids = " ".join(map(str, found.app_pids)) or "?"
    show(f"{found.name}: {found.snapshot} restored and stopped (no network but loopback, no volumes, no secrets)\n"
         f"attach:  gdb -p {found.app_pids[0] if found.app_pids else 'PID'}   (host PIDs of the app: {pids})\n"
         f"resume:  {found.resume}\nremove:  warmstart stop {found.name}")
