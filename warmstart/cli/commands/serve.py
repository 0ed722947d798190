from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Annotated, Any

import typer

from warmstart.cli import options
from warmstart.cli.output import handle_errors, stderr
from warmstart.errors import UsageError


@handle_errors
def serve(
    app: Annotated[str, typer.Argument(help="App name given to `warmstart build`.")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to accept connections on.")] = "127.0.0.1:8080",
    idle: Annotated[float, typer.Option("--idle", help="Stop an instance after this many idle seconds.")] = 60.0,
    min_warm: Annotated[int, typer.Option("--min-warm", help="Instances kept ready ahead of demand.")] = 0,
    max_instances: Annotated[int, typer.Option("--max", help="Never run more instances than this.")] = 1,
    wait_timeout: Annotated[
        float, typer.Option("--wait-timeout", help="Seconds a connection may wait for an instance.")
    ] = 30.0,
    port: Annotated[
        int | None, typer.Option("--port", help="Container port to forward to (when the app has several).")
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", help="Open connections per instance before another is started (up to --max)."),
    ] = 10,
    conn_idle: Annotated[
        float, typer.Option("--conn-idle", help="Close a connection with no traffic either way for this many seconds.")
    ] = 300.0,
    pool: Annotated[
        int,
        typer.Option(
            "--pool",
            help="Pre-started sandboxes kept ready (0 disables): a request from zero then costs only CRIU's restore.",
        ),
    ] = 1,
    admin: Annotated[
        str | None,
        typer.Option("--admin", help="HOST:PORT serving /healthz (503 while draining) and Prometheus /metrics."),
    ] = None,
    drain: Annotated[
        float,
        typer.Option("--drain", help="On SIGTERM, seconds open connections may take to finish before shutdown."),
    ] = 30.0,
    migrate_to: Annotated[
        str | None, typer.Option("--migrate-to", help="With --admin: POST /migrate moves the instance through this "
                                 "registry REF (as `migrate --to`), holding connections meanwhile.")
    ] = None,
    migrate_via: Annotated[
        str | None, typer.Option("--migrate-via", help="With --migrate-to: the command that runs warmstart on the "
                                 "destination, e.g. 'ssh hostb'.")
    ] = None,
    migrate_post_copy: Annotated[
        bool, typer.Option("--migrate-post-copy", help="With --migrate-to: migrate post-copy (as `migrate "
                           "--post-copy`): held connections go to the destination once it answers, while the rest "
                           "of its memory streams in.")
    ] = False,
    file: options.SpecFile = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Events as JSON lines on stdout.")] = False,
    require_signed: options.RequireSigned = False,
    trust_key: options.TrustKey = None,
) -> None:
    """Scale from zero: restore an instance when a connection arrives, stop it when idle."""
    from warmstart.serve.front import ServeOptions, parse_listen
    from warmstart.serve.front import serve as run_front

    host, listen_port = parse_listen(listen)
    if (migrate_to is None) != (migrate_via is None) or (migrate_to and not admin) or (migrate_post_copy
                                                                                        and not migrate_to):
        raise UsageError("--migrate-to and --migrate-via go together, and need --admin (POST /migrate triggers it); "
                         "--migrate-post-copy needs them")
    opts = ServeOptions(
        app=app,
        listen_host=host,
        listen_port=listen_port,
        idle=idle,
        min_warm=min_warm,
        max_instances=max_instances,
        wait_timeout=wait_timeout,
        container_port=port,
        concurrency=concurrency,
        conn_idle=conn_idle,
        pool=pool,
        trust=options.trust_policy(trust_key, require_signed),
        admin=parse_listen(admin, flag="--admin") if admin else None,
        drain=drain,
        migrate_to=migrate_to,
        migrate_via=_split(migrate_via),
        migrate_post_copy=migrate_post_copy,
    )

    def emit(event: dict[str, Any]) -> None:
        event = {"time": round(time.time(), 3), **event}
        if json_output:
            print(json.dumps(event), flush=True)
            return
        detail = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "event") and v is not None)
        stderr.print(f"{time.strftime('%H:%M:%S')} {event['event']:<10} {detail}", markup=False)
        sys.stderr.flush()

    run_front(
        opts,
        engine=options.engine_for(engine),
        store=options.open_store(cache_dir),
        spec=options.load_spec_file(file).get(app),
        emit=emit,
    )


def _split(via: str | None) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(via)) if via else ()
    except ValueError as exc:
        raise UsageError(f"--migrate-via {via!r}: {exc}") from exc
