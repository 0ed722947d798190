"""Rendering: results to stdout (human or --json), progress to stderr only on a terminal, errors in one place."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from warmstart.errors import Interrupted, WarmstartError

P = ParamSpec("P")
R = TypeVar("R")

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class _Commit:
    """Set once a command's result has been (or is being) printed: from then on the work stands, and an interrupt
    arriving late must neither undo it nor report it undone."""

    done = False


committed = _Commit()


def result(text: str) -> None:
    """Print a command's human result on stdout (the command's work is then complete)."""
    committed.done = True
    stdout.print(text, markup=False)


def progress(message: str) -> None:
    if sys.stderr.isatty():
        stderr.print(f"[dim]… {message}[/dim]")


def emit_json(obj: Any) -> None:
    committed.done = True
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    print(json.dumps(obj, indent=2, sort_keys=True))


def _report(exc: WarmstartError, as_json: bool) -> None:
    stderr.print(f"warmstart: error: {exc.message}", markup=False)
    for line in exc.details.splitlines():
        stderr.print(f"  {line}", markup=False)
    if exc.hint:
        stderr.print(f"  hint: {exc.hint}", markup=False)
    if as_json:
        emit_json({"error": {"kind": type(exc).__name__, "message": exc.message, "details": exc.details,
                             "hint": exc.hint, "exit_code": exc.exit_code}})


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The single place where warmstart errors and interrupts become messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("json_output"))
        try:
            return fn(*args, **kwargs)
        except WarmstartError as exc:
            _report(exc, as_json)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if committed.done:  # the result is out: it stands
                raise typer.Exit(0) from None
            exc = Interrupted("interrupted; everything this command created has been removed")
            _report(exc, as_json)
            raise typer.Exit(exc.exit_code) from None

    return wrapper
