from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options, plain
from warmstart.cli.output import handle_errors


@handle_errors
def run(
    app: Annotated[str, typer.Argument(help="App name given to `warmstart build`.")],
    port: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--publish",
            help="HOST_PORT:CONTAINER_PORT or IP:HOST_PORT:CONTAINER_PORT (repeatable); unpublished ports get a "
            "free port on 127.0.0.1.",
        ),
    ] = None,
    no_fallback: Annotated[
        bool, typer.Option("--no-fallback", help="Fail instead of starting cold when no snapshot can be restored.")
    ] = False,
    cold: Annotated[
        bool, typer.Option("--cold", help="Start cold even when a snapshot exists (for comparisons).")
    ] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Pull from this REF when no snapshot is cached here.")
    ] = None,
    file: options.SpecFile = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
    require_signed: options.RequireSigned = False,
    trust_key: options.TrustKey = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Container name of the instance [default: ws-APP-RANDOM].")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE label on the instance's container (repeatable).")
    ] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory limit, e.g. 512M, 2G.")] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPU limit, e.g. 1.5.")] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option("-v", "--volume", help="HOST_PATH:CONTAINER_PATH[:OPTIONS] bind mount besides the app's "
                     "(repeatable)."),
    ] = None,
    post_copy_credentials: Annotated[
        str | None, typer.Option("--post-copy-credentials", hidden=True,
                                 help="- : read a post-copy migration's TLS credentials from stdin (migrate).")
    ] = None,
    restart: Annotated[
        str | None, typer.Option("--restart", help="on-failure: stay in the foreground and restore the instance in "
                                 "place (same name and ports) when it dies or fails its probe.")
    ] = None,
    checkpoint_every: Annotated[
        str | None, typer.Option("--checkpoint-every", help="With --restart: checkpoint the running instance this "
                                 "often (e.g. 30s, 5m); recovery restores the newest good one.")
    ] = None,
    keep: Annotated[int, typer.Option("--keep", help="With --checkpoint-every: checkpoints kept.")] = 3,
    health_retries: Annotated[
        int, typer.Option("--health-retries", help="With --restart: failed probes in a row that count as a failure.")
    ] = 3,
    ip: Annotated[str | None, typer.Option("--ip", help="Restore at this address on podman's network and keep the "
                                           "app's established TCP connections (a moved instance).")] = None,
    mac_address: Annotated[str | None, typer.Option("--mac-address", help="With --ip: its MAC address.")] = None,
) -> None:
    """Start a new instance from the newest snapshot, or cold (saying why) when none can be restored."""
    plain.run(
        app=app,
        ports=port,
        no_fallback=no_fallback,
        cold=cold,
        registry=registry,
        file=file,
        cache_dir=cache_dir,
        engine=engine,
        json_output=json_output,
        require_signed=require_signed,
        trust_key=trust_key,
        name=name,
        label=label,
        memory=memory,
        cpus=cpus,
        volume=volume,
        post_copy_credentials=post_copy_credentials,
        restart=restart,
        checkpoint_every=checkpoint_every,
        keep=keep,
        health_retries=health_retries,
        ip=ip,
        mac_address=mac_address,
    )
