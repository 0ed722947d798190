from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress
from warmstart.cli.output import result as show
from warmstart.core.spec import AppSpec, make_probe, parse_container_port, parse_env, validate_app_name, validate_tag
from warmstart.errors import UsageError

if TYPE_CHECKING:
    from warmstart.snapshot.build import BuildResult


@handle_errors
def build(
    command: Annotated[
        list[str] | None, typer.Argument(help="Command to run instead of the image's (after --).")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="App to build [default: every app in the spec file].")
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="Local image to start.")] = None,
    port: Annotated[
        list[str] | None, typer.Option("-p", "--port", help="Container port the app listens on (repeatable).")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("-e", "--env", help="NAME=VALUE for the app (repeatable).")] = None,
    ready_http: Annotated[str | None, typer.Option("--ready-http", help="Ready when GET PATH answers 2xx.")] = None,
    ready_tcp: Annotated[
        int | None, typer.Option("--ready-tcp", help="Ready when this container port accepts TCP.")
    ] = None,
    ready_port: Annotated[int | None, typer.Option("--ready-port", help="Container port for --ready-http.")] = None,
    ready_timeout: Annotated[float, typer.Option("--ready-timeout", help="Seconds to wait for readiness.")] = 60.0,
    uniqueness: Annotated[
        str | None,
        typer.Option(
            "--uniqueness", help="GET PATH whose answer must differ between two trial clones, or the build fails."
        ),
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Snapshot tag [default: derived from the cache key].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when an unchanged snapshot is cached.")] = False,
    compare_trim: Annotated[
        bool, typer.Option("--compare-trim", help="Also measure the snapshot size before trimming.")
    ] = False,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="sandbox (restore inside a fresh container; the default where available) or container (the "
            "engine's whole-container checkpoint) [default: $WARMSTART_MODE or sandbox]",
            show_default=False,
        ),
    ] = None,
    sign_key: options.SignKey = None,
    encryption_key: Annotated[
        Path | None,
        typer.Option("--encryption-key", help="Key file for apps with secrets_during_warmup (their snapshot is "
                     "encrypted) [default: $WARMSTART_SNAPSHOT_KEY_FILE]", show_default=False),
    ] = None,
    file: options.SpecFile = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Start the app, wait until it is ready, warm it up, checkpoint it and store the snapshot in the cache."""
    from warmstart.core import specfile
    from warmstart.security import signing
    from warmstart.snapshot.build import build as build_snapshot

    apps = options.load_spec_file(file)
    flags_given = any(
        [command, image, port, env, ready_http, ready_tcp is not None, ready_port is not None, uniqueness]
    )
    if name is None:
        if not apps:
            raise UsageError(f"give --name and --image, or describe apps in {specfile.DEFAULT_FILE}")
        if flags_given:
            raise UsageError("flags that describe an app need --name (several apps are in the spec file)")
        specs = list(apps.values())
    else:
        if apps and validate_app_name(name) not in apps and not image:
            raise UsageError(f"app {name!r} is not in the spec file (it describes {', '.join(sorted(apps))})",
                             hint="give --image (and --port, --ready-http ...) to describe it with flags")
        specs = [_spec_from_flags(apps.get(validate_app_name(name)), name=name, image=image, command=command,
                                  port=port, env=env, ready_http=ready_http, ready_tcp=ready_tcp, ready_port=ready_port,
                                  ready_timeout=ready_timeout, uniqueness=uniqueness)]
    store = options.open_store(cache_dir)
    eng = options.engine_for(engine)
    if tag is not None:
        validate_tag(tag)
    results = [build_snapshot(s, engine=eng, store=store, tag=tag, force=force, compare_trim=compare_trim, mode=mode,
                              sign_key=signing.signing_key(sign_key), encryption_key_file=encryption_key,
                              progress=progress) for s in specs]
    if json_output:
        emit_json(results[0] if name else {"builds": [dataclasses.asdict(r) for r in results]})
        return
    for r in results:
        show(_summary(r))


def _summary(r: BuildResult) -> str:
    if r.reused:
        return f"unchanged: kept snapshot {r.snapshot} ({r.size_bytes / 1e6:.1f} MB); --force rebuilds it"
    extra = f", {r.warmup_requests} warm-up requests in {r.warmup_seconds:.1f}s" if r.warmup_requests else ""
    if r.untrimmed_size_bytes is not None:
        extra += f", {r.untrimmed_size_bytes / 1e6:.1f} MB before trim"
    restored = (f"restored in {r.restored_ready_seconds:.2f}s" if r.restored_ready_seconds is not None
                else "its trial restores failed (run will try, and start cold if they fail)")
    return (f"built snapshot {r.snapshot} of {r.app} ({r.size_bytes / 1e6:.1f} MB{extra}) in {r.build_seconds:.2f}s: "
            f"ready cold in {r.cold_ready_seconds or r.ready_seconds:.2f}s, {restored} (trial medians), checkpoint "
            f"took {r.checkpoint_seconds:.2f}s")


def _spec_from_flags(
    base: AppSpec | None,
    *,
    name: str,
    image: str | None,
    command: list[str] | None,
    port: list[str] | None,
    env: list[str] | None,
    ready_http: str | None,
    ready_tcp: int | None,
    ready_port: int | None,
    ready_timeout: float,
    uniqueness: str | None = None,
) -> AppSpec:
    """The spec file's app with the given flags laid over it (or an app made from flags alone)."""
    if base is None:
        base = AppSpec(name=name, image=options.require(image, "--image"))
    ports = tuple(parse_container_port(p) for p in port) if port else base.ports
    probe = make_probe(
        ready_http=ready_http, ready_tcp=ready_tcp, ports=list(ports), ready_port=ready_port, timeout=ready_timeout
    )
    return dataclasses.replace(
        base,
        image=image or base.image,
        build_context=None if image else base.build_context,
        command=tuple(command) if command else base.command,
        env={**base.env, **parse_env(env or [])},
        ports=ports,
        probe=probe or base.probe,
        uniqueness=uniqueness or base.uniqueness,
    )
