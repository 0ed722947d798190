"""`warmstart logs` and `warmstart exec`: docker-style verbs for the instances warmstart started (only those)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress
from warmstart.cli.output import result as show
from warmstart.core.spec import validate_seconds
from warmstart.errors import UsageError
from warmstart.runtime.instances import inspect_instance, ours


@handle_errors
def logs(
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep streaming until the instance stops.")] = False,
    engine: options.EngineOpt = None,
) -> None:
    """Print an instance's log (a restored one's starts at its restore: the build's output is not in it)."""
    eng = options.engine_for(engine)
    eng.stream_logs(container=ours(engine=eng, names=[name])[0], follow=follow)


@handle_errors
def inspect(
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Show one instance: app, mode, snapshot, status, image, ports, labels."""
    instance = inspect_instance(engine=options.engine_for(engine), name=name)
    if json_output:
        emit_json(instance)
        return
    ports = ", ".join(f"{k} -> {v}" for k, v in instance.ports.items()) or "none"
    show(f"name       {instance.name}\napp        {instance.app}\nmode       {instance.mode}\n"
         f"snapshot   {instance.snapshot or '-'}\nstatus     {instance.status}"
         f"{f' (exit code {instance.exit_code})' if instance.status == 'exited' else ''}\n"
         f"image      {instance.image}\ncreated    {instance.created}\ncontainer  {instance.container}\n"
         f"ports      {ports}")
    for key, value in sorted(instance.labels.items()):
        show(f"label      {key}={value}")


@handle_errors
def exec(  # noqa: A001 - the verb users know
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    command: Annotated[list[str], typer.Argument(help="Command to run in the instance (after --).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before the command is given up on.")] = 60,
    engine: options.EngineOpt = None,
) -> None:
    """Run a command in an instance; prints its output and exits with its exit code."""
    if not command:
        raise UsageError("give the command to run after --")
    validate_seconds(timeout, "--timeout")
    eng = options.engine_for(engine)
    result = eng.exec(container=ours(engine=eng, names=[name])[0], command=command, timeout=timeout)
    if result.output:
        show(result.output)
    raise typer.Exit(result.exit_code)


@handle_errors
def checkpoint(
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    tag: Annotated[str | None, typer.Option("--tag", help="Tag of the new snapshot [default: SOURCE-ckpt-TIME].")]
    = None,
    stop: Annotated[bool, typer.Option("--stop", help="Freeze the app with the dump (nothing it does after is lost) "
                                       "and remove the instance once its checkpoint is stored (else it runs on).")]
    = False,
    on_signal: Annotated[str | None, typer.Option("--on-signal", help="Wait for this signal (USR1, USR2, HUP, QUIT, "
                                                  "WINCH) to this process first: capture the state at the moment "
                                                  "something (an alert, the app's failure hook) sends it.")] = None,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Snapshot a running instance's state into the cache (it keeps running unless --stop); `run APP:TAG` restores
    it."""
    from warmstart.core.signals import await_signal, trigger_signal
    from warmstart.snapshot.checkpoint import checkpoint_instance

    eng, store = options.engine_for(engine), options.open_store(cache_dir)
    if on_signal is not None:
        sig = trigger_signal(on_signal)
        inspect_instance(engine=eng, name=name)  # a wrong name is said now, not when the signal comes
        progress(f"waiting for SIG{sig.name.removeprefix('SIG')} to pid {os.getpid()} to checkpoint {name}")
        await_signal(sig)
    result = checkpoint_instance(name, engine=eng, store=store, tag=tag, stop=stop)
    if json_output:
        emit_json(result)
        return
    show(f"checkpointed {result.instance} as {result.snapshot} ({result.size_bytes / 1e6:.1f} MB) in "
         f"{result.checkpoint_seconds:.2f}s" + ("; the instance was removed" if result.stopped else ""))


@handle_errors
def migrate(
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    to: Annotated[str, typer.Option("--to", help="HOST[:PORT]/REPOSITORY[:TAG] of a registry both hosts reach.")],
    via: Annotated[str, typer.Option("--via", help="Command that runs `warmstart` on the destination, e.g. "
                                     "'ssh hostb' (split like a shell would).")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain HTTP to the registry (default only for "
                                           "loopback registries).")] = False,
    post_copy: Annotated[bool, typer.Option("--post-copy", help="Push only what the destination needs to start; "
                                            "it fetches the rest of the memory from this host while it runs.")]
    = False,
    page_server: Annotated[str | None, typer.Option("--page-server", help="ADDRESS[:PORT] of this host that the "
                                                    "destination reaches, for --post-copy [default: the address "
                                                    "of the default route, a free port].")] = None,
    keep_address: Annotated[bool, typer.Option("--keep-address", help="Restore it at its IP and MAC address, "
                                               "keeping its established TCP connections (both hosts on one L2 "
                                               "network; podman).")] = False,
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Move a running instance to another host: checkpoint it (the app stops with the dump), push, restore it there
    with the same name and ports; on any failure it is restored here again. Stop-and-copy, or --post-copy."""
    import shlex

    from warmstart.errors import UsageError
    from warmstart.migrate.migration import migrate as migrate_instance

    try:
        prefix = shlex.split(via)
    except ValueError as exc:
        raise UsageError(f"--via {via!r}: {exc}") from exc
    result = migrate_instance(name, to=to, via=prefix, engine=options.engine_for(engine),
                              store=options.open_store(cache_dir), insecure=insecure, post_copy=post_copy,
                              page_server=page_server, keep_address=keep_address, progress=progress)
    if json_output:
        emit_json(result)
        return
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items())
    show(f"migrated {result.instance} ({result.mode}) through {result.reference}: it runs on the destination ("
         f"{', '.join(f'{k} -> {v}' for k, v in result.destination.get('ports', {}).items()) or 'no ports'}); "
         f"down for {result.downtime_seconds:.2f}s ({phases})"
         + (f"; {result.streamed_bytes / 2**20:.0f} MiB of its memory followed it after it started"
            if result.mode == "post-copy" else ""))
