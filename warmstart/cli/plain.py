"""The CLI's parts that need neither typer nor rich: result and error output, the commit rule for interrupts, the
shared option helpers, and `run`'s body. `warmstart run` is on the restore path, where every import counts: the
lean entry (cli/__init__.py) parses `run` with argparse and calls straight into this module, skipping typer and
rich (about 45 ms); every other command goes through the typer app, which uses the same functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from warmstart.errors import Interrupted, WarmstartError


class _Commit:
    """Set once a command's result has been (or is being) printed: from then on the work stands, and an interrupt
    arriving late must neither undo it nor report it undone."""

    done = False


committed = _Commit()


def result(text: str) -> None:
    """Print a command's human result on stdout (the command's work is then complete)."""
    committed.done = True
    print(text, flush=True)


def emit_json(obj: Any) -> None:
    committed.done = True
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    print(json.dumps(obj, indent=2, sort_keys=True), flush=True)


DEBUG_ENV = "WARMSTART_DEBUG"  # "1": an internal error shows its traceback instead of one line
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): a bug, not bad input or a failed operation

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Progress goes to stderr (stdout is for results): on a terminal with the time since the command started, else
    as timestamped log lines (CI logs, `2>build.log`)."""
    if sys.stderr.isatty():
        print(f"… [{time.monotonic() - _STARTED:5.1f}s] {message}", file=sys.stderr, flush=True)
    else:
        print(f"{time.strftime('%H:%M:%S')} warmstart: {message}", file=sys.stderr, flush=True)


def report(exc: WarmstartError, as_json: bool) -> None:
    """The one error format: one line, then the relevant log lines and a hint; with --json also an object."""
    lines = [f"warmstart: error: {exc.message}", *(f"  {ln}" for ln in exc.details.splitlines())]
    if exc.hint:
        lines.append(f"  hint: {exc.hint}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    if as_json:
        emit_json({"error": {"kind": type(exc).__name__, "message": exc.message, "details": exc.details,
                             "hint": exc.hint, "exit_code": exc.exit_code}})


def exit_code_for(exc: BaseException, as_json: bool) -> int:
    """Map what a command raised to its exit code, reporting it: the single place both CLI fronts use."""
    if isinstance(exc, WarmstartError):
        report(exc, as_json)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        if committed.done:  # the result is out: it stands
            return 0
        interrupted = Interrupted("interrupted; everything this command created has been removed")
        report(interrupted, as_json)
        return interrupted.exit_code
    if isinstance(exc, BrokenPipeError):  # stdout closed early (`| head`): the entry point ends quietly
        raise exc
    if isinstance(exc, Exception) and not os.environ.get(DEBUG_ENV):
        text = str(exc).splitlines()[0][:300] if str(exc) else ""
        report(WarmstartError(f"internal error: {type(exc).__name__}{': ' + text if text else ''}",
                              hint=f"this is a bug in warmstart; {DEBUG_ENV}=1 shows the traceback to report"), as_json)
        return INTERNAL_ERROR_EXIT
    raise exc


# -- options shared by several commands --------------------------------------------------------------------------------

def load_spec_file(path: Path | None) -> dict[str, Any]:
    """Apps of the given spec file, or of ./warmstart.toml when it exists, else none."""
    if path is None:
        path = Path("warmstart.toml")  # specfile.DEFAULT_FILE, without importing the parser when there is none
        if not path.exists():
            return {}
    from warmstart.core import specfile

    return specfile.load(path)


def open_store(cache_dir: Path | None) -> Any:
    from warmstart.cache.store import SnapshotStore
    from warmstart.core.layout import default_cache_dir

    return SnapshotStore(cache_dir or default_cache_dir()).open()


def engine_for(choice: str | None) -> Any:
    from warmstart.engines import resolve_engine

    return resolve_engine(choice).engine


def port_bindings(values: list[str] | None) -> list[Any]:
    from warmstart.core.spec import parse_port_binding

    return [parse_port_binding(v) for v in values or []]


# -- run ---------------------------------------------------------------------------------------------------------------

def limits_from(memory: str | None, cpus: float | None) -> Any:
    """`--memory 512M --cpus 1.5` as engine limits (None when neither is given)."""
    if memory is None and cpus is None:
        return None
    from warmstart.core.spec import parse_size
    from warmstart.engines.base import Limits
    from warmstart.errors import UsageError

    if cpus is not None and not 0 < cpus <= 1024:
        raise UsageError(f"invalid --cpus {cpus:g}: expected a number of CPUs greater than 0")
    size = parse_size(memory, unit_required=True) if memory is not None else None
    if size is not None and size < 6 * 1024 * 1024:
        raise UsageError(f"invalid --memory {memory}: below the 6M a container needs")
    return Limits(memory_bytes=size, cpus=cpus)


def trust_policy(keys: list[Path] | None, require: bool) -> Any:
    from warmstart.security.signing import TrustPolicy

    return TrustPolicy.from_sources(keys=keys, require=require)


def run(*, app: str, ports: list[str] | None, no_fallback: bool, cold: bool, registry: str | None,
        file: Path | None, cache_dir: Path | None, engine: str | None, json_output: bool,
        require_signed: bool = False, trust_key: list[Path] | None = None, name: str | None = None,
        label: list[str] | None = None, memory: str | None = None, cpus: float | None = None,
        volume: list[str] | None = None, post_copy_credentials: str | None = None, restart: str | None = None,
        checkpoint_every: str | None = None, keep: int = 3, health_retries: int = 3, ip: str | None = None,
        mac_address: str | None = None) -> None:
    """`warmstart run`: start a new instance from the newest snapshot, or cold (saying why); with `--restart
    on-failure`, then supervise it in the foreground (warmstart/ha/supervisor.py)."""
    ha = ha_options(restart, checkpoint_every, keep, health_retries)
    from warmstart.engines.early import prefetch_for_run

    prefetch_for_run(app, cache_dir=cache_dir, engine=engine, spec_file=file)  # overlaps with the imports below
    from warmstart.restore.launch import launch

    bindings = port_bindings(ports)
    trust = trust_policy(trust_key, require_signed)
    spec = load_spec_file(file).get(app)
    store = open_store(cache_dir)
    from warmstart.core.labels import user_labels
    from warmstart.core.sandbox import network_address

    tls = None
    if post_copy_credentials is not None:  # from `migrate --post-copy`, on this command's stdin only
        from warmstart.errors import UsageError
        from warmstart.restore.postcopy import destination_credentials

        if post_copy_credentials != "-":
            raise UsageError("--post-copy-credentials takes - (stdin) only: a key does not belong in a file or "
                             "on a command line")
        tls = destination_credentials(sys.stdin.read(1 << 20))

    launched = launch(app, engine=engine_for(engine), store=store, ports=bindings, no_fallback=no_fallback,
                      cold=cold, spec=spec, registry=registry, trust=trust, name=name,
                      extra_labels=user_labels(label or []), limits=limits_from(memory, cpus),
                      volumes=tuple(volume or ()), post_copy_tls=tls, address=network_address(ip, mac_address),
                      progress=progress)
    if ha is not None:
        supervise_run(launched, ha, engine=engine_for(engine), store=store, spec=spec, json_output=json_output,
                      labels=user_labels(label or []))
        return
    if json_output:
        emit_json(launched)
        return
    addresses = ", ".join(f"{k} -> {v}" for k, v in launched.ports.items()) or "no ports"
    if launched.mode == "restored":
        result(f"restored {launched.app} as {launched.name} from snapshot {launched.snapshot}, ready in "
               f"{launched.ready_seconds:.2f}s ({addresses})")
    else:
        result(f"started {launched.app} cold as {launched.name}, ready in {launched.ready_seconds:.2f}s "
               f"({addresses})\n  why cold: {launched.reason}")


def ha_options(restart: str | None, checkpoint_every: str | None, keep: int, health_retries: int) -> Any:
    """`--restart on-failure [--checkpoint-every D --keep N --health-retries N]` (None without --restart)."""
    from warmstart.errors import UsageError

    if restart is None:
        if checkpoint_every is not None:
            raise UsageError("--checkpoint-every needs --restart on-failure (something must restore the checkpoints)")
        return None
    if restart != "on-failure":
        raise UsageError(f"invalid --restart {restart!r}: expected on-failure")
    from warmstart.core.spec import parse_duration, validate_seconds
    from warmstart.ha.supervisor import HaOptions

    every = None
    if checkpoint_every is not None:
        every = parse_duration(checkpoint_every)
        if every is None:
            raise UsageError(f"invalid --checkpoint-every {checkpoint_every!r}: expected a duration like 30s or 5m")
        validate_seconds(every, "--checkpoint-every")
    return HaOptions(checkpoint_every=every, keep=keep, health_retries=health_retries)


def supervise_run(launched: Any, ha: Any, *, engine: Any, store: Any, spec: Any, json_output: bool,
                  labels: dict[str, str]) -> None:
    """Print the launch, then each supervision event (JSON lines with --json) until interrupted."""
    from warmstart.ha.supervisor import supervise

    def emit(event: dict[str, Any]) -> None:
        committed.done = True  # the instance runs: an interrupt ends supervision, not the instance
        if json_output:
            print(json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True), flush=True)
        else:
            fields = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
            print(f"{time.strftime('%H:%M:%S')} {event['event']} {fields}", flush=True)

    emit({"event": "started", **dataclasses.asdict(launched)})
    supervise(launched, engine=engine, store=store, spec=spec, opts=ha, emit=emit, labels=labels)


class _Refuse(Exception):
    """The lean parser cannot handle these arguments; the full CLI will (and explain any usage error)."""


def run_parser() -> Any:
    """`run`'s options for the lean path: the same names as the typer command's (a test pins them together)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # argparse's hook: never print or exit here
            raise _Refuse(message)

    p = Parser(prog="warmstart run", add_help=False, allow_abbrev=False)
    p.add_argument("app")
    p.add_argument("-p", "--publish", action="append", dest="ports")
    p.add_argument("--no-fallback", action="store_true")
    p.add_argument("--cold", action="store_true")
    p.add_argument("--registry")
    p.add_argument("-f", "--file", type=Path)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--engine")
    p.add_argument("--json", action="store_true", dest="json_output")
    p.add_argument("--require-signed", action="store_true")
    p.add_argument("--trust-key", action="append", type=Path)
    p.add_argument("--name")
    p.add_argument("--label", action="append")
    p.add_argument("--memory")
    p.add_argument("--cpus", type=float)
    p.add_argument("-v", "--volume", action="append")
    p.add_argument("--post-copy-credentials")
    p.add_argument("--ip")
    p.add_argument("--mac-address")
    p.add_argument("--restart")
    p.add_argument("--checkpoint-every")
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--health-retries", type=int, default=3)
    return p


def lean_run(argv: list[str]) -> int | None:
    """`warmstart run ARGS` without typer: the exit code, or None when ARGS need the full CLI (help, a usage
    error to explain, an option this parser does not know), which then handles them as usual."""
    try:
        args = run_parser().parse_args(argv)
    except _Refuse:
        return None
    if args.app.startswith("-"):
        return None
    try:
        run(**vars(args))
    except (Exception, KeyboardInterrupt) as exc:
        return exit_code_for(exc, args.json_output)
    return 0
