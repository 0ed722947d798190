from __future__ import annotations

from typing import Annotated, Optional

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress, result as show
from warmstart.launch import launch


@handle_errors
def run(
    app: Annotated[str, typer.Argument(help="App name given to `warmstart build`.")],
    port: Annotated[Optional[list[str]], typer.Option("-p", "--publish", help="HOST_PORT:CONTAINER_PORT or IP:HOST_PORT:CONTAINER_PORT (repeatable); unpublished ports get a free port on 127.0.0.1.")] = None,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Fail instead of starting cold when no snapshot can be restored.")] = False,
    cold: Annotated[bool, typer.Option("--cold", help="Start cold even when a snapshot exists (for comparisons).")] = False,
    registry: Annotated[Optional[str], typer.Option("--registry", help="Pull from this REF when no snapshot is cached here.")] = None,
    file: options.SpecFile = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Start a new instance from the newest snapshot, or cold (saying why) when none can be restored."""
    bindings = options.port_bindings(port)
    spec = options.load_spec_file(file).get(app)
    store = options.open_store(cache_dir)
    result = launch(app, engine=options.engine_for(engine), store=store, ports=bindings, no_fallback=no_fallback,
                    cold=cold, spec=spec, registry=registry, progress=progress)
    if json_output:
        emit_json(result)
        return
    ports = ", ".join(f"{k} -> {v}" for k, v in result.ports.items()) or "no ports"
    if result.mode == "restored":
        show(f"restored {result.app} as {result.name} from snapshot {result.snapshot}, ready in "
             f"{result.ready_seconds:.2f}s ({ports})")
    else:
        show(f"started {result.app} cold as {result.name}, ready in {result.ready_seconds:.2f}s ({ports})\n"
             f"  why cold: {result.reason}")
