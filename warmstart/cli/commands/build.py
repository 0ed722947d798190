from __future__ import annotations

from typing import Annotated, Optional

import typer

from warmstart.build import build as build_snapshot
from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress, stdout
from warmstart.spec import AppSpec, make_probe, parse_container_port, parse_env, validate_app_name


@handle_errors
def build(
    command: Annotated[Optional[list[str]], typer.Argument(help="Command to run instead of the image's (after --).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="App name (the cache key for its snapshots).")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="Local image to start.")] = None,
    port: Annotated[Optional[list[str]], typer.Option("-p", "--port", help="Container port the app listens on (repeatable).")] = None,
    env: Annotated[Optional[list[str]], typer.Option("-e", "--env", help="NAME=VALUE for the app (repeatable).")] = None,
    ready_http: Annotated[Optional[str], typer.Option("--ready-http", help="Ready when GET PATH answers 2xx.")] = None,
    ready_tcp: Annotated[Optional[int], typer.Option("--ready-tcp", help="Ready when this container port accepts TCP.")] = None,
    ready_port: Annotated[Optional[int], typer.Option("--ready-port", help="Container port for --ready-http.")] = None,
    ready_timeout: Annotated[float, typer.Option("--ready-timeout", help="Seconds to wait for readiness.")] = 60.0,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Start the app, wait until it is ready, checkpoint it and store the snapshot in the cache."""
    ports = [parse_container_port(p) for p in port or []]
    spec = AppSpec(
        name=validate_app_name(options.require(name, "--name")),
        image=options.require(image, "--image"),
        command=list(command or []),
        env=parse_env(env or []),
        ports=ports,
        probe=make_probe(ready_http=ready_http, ready_tcp=ready_tcp, ports=ports, ready_port=ready_port,
                         timeout=ready_timeout),
    )
    store = options.open_store(cache_dir)
    result = build_snapshot(spec, engine=options.engine_for(engine), store=store, progress=progress)
    if json_output:
        emit_json(result)
        return
    stdout.print(
        f"built snapshot {result.snapshot} of {result.app} ({result.size_bytes / 1e6:.1f} MB) in "
        f"{result.build_seconds:.2f}s: cold start was ready in {result.ready_seconds:.2f}s, "
        f"checkpoint took {result.checkpoint_seconds:.2f}s",
        markup=False,
    )
