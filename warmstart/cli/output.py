"""Rendering for the typer commands: rich consoles, and the decorator that routes errors and interrupts through the
shared map in plain.py (results, JSON and progress are plain.py's too)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from warmstart.cli.plain import committed, emit_json, exit_code_for, progress, result

__all__ = ["committed", "emit_json", "handle_errors", "progress", "result", "stderr", "stdout"]

P = ParamSpec("P")
R = TypeVar("R")

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Every typer command's errors and interrupts become messages and exit codes through plain.exit_code_for,
    the one map both CLI fronts share."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:  # a command's own exit code (click's Exit is an Exception too)
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_code_for(exc, bool(kwargs.get("json_output")))) from None

    return wrapper
