from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors
from warmstart.cli.output import result as show
from warmstart.runtime.instances import stop_instances


@handle_errors
def stop(
    names: Annotated[list[str] | None, typer.Argument(help="Instance names (see `warmstart ps`).")] = None,
    app: Annotated[str | None, typer.Option("--app", help="Stop every instance of this app.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every warmstart instance.")] = False,
    time: Annotated[
        float,
        typer.Option(
            "-t",
            "--time",
            help="Seconds between SIGTERM and SIGKILL, as `docker stop -t` [default: 0: at once]",
            show_default=False,
        ),
    ] = 0,
    all_caches: Annotated[bool, typer.Option("--all-caches", help="With --app/--all: also instances launched from "
                                             "other cache dirs.")] = False,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Stop and remove instances that warmstart started (and nothing else)."""
    from warmstart.cache.store import SnapshotStore
    from warmstart.core.layout import default_cache_dir

    cache = None if all_caches else str(SnapshotStore(cache_dir or default_cache_dir()).root)
    ended = stop_instances(engine=options.engine_for(engine), names=list(names or []), app=app, all_=all_, timeout=time,
                           cache=cache)
    if json_output:
        emit_json({"stopped": list(ended), "exit_codes": ended})
        return
    show(
        "\n".join(f"stopped {n}" + (f" (exit code {c})" if c is not None else "") for n, c in ended.items())
        or "nothing to stop"
    )
