from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors
from warmstart.cli.output import result as show
from warmstart.instances import list_instances


@handle_errors
def ps(
    app: Annotated[str | None, typer.Option("--app", help="Only this app's instances.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only the names.")] = False,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """List the instances warmstart started (mode: restored, cold, or pooled: a pre-started sandbox)."""
    instances = list_instances(engine=options.engine_for(engine), app=app)
    if quiet and not json_output:
        if instances:
            show("\n".join(i.name for i in instances))
        return
    if json_output:
        emit_json({"instances": [vars(i) for i in instances]})
        return
    if not instances:
        show("no instances")
        return
    show(f"{'NAME':<28} {'APP':<16} {'MODE':<9} {'STATUS':<9} PORTS")
    for i in instances:
        ports = ", ".join(f"{k}->{v}" for k, v in i.ports.items())
        show(f"{i.name:<28} {i.app:<16} {i.mode:<9} {i.status:<9} {ports}")
