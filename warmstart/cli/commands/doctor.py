from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, stdout
from warmstart.core.layout import default_cache_dir


@handle_errors
def doctor(
    smoke: Annotated[bool, typer.Option("--smoke", help="Also checkpoint and restore a tiny real container.")] = False,
    smoke_image: Annotated[
        str, typer.Option("--smoke-image", help="Image for --smoke (needs python3).")
    ] = "localhost/warmstart-base-python:bookworm",
    cache_dir: options.CacheDir = None,
    engine: options.EngineOpt = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Check that this host can checkpoint and restore; each failure comes with a fix."""
    from warmstart.doctor import run_checks

    checks = run_checks(
        engine_choice=engine, cache_dir=cache_dir or default_cache_dir(), smoke=smoke, smoke_image=smoke_image
    )
    ok = all(c.ok for c in checks)
    if json_output:
        emit_json({"ok": ok, "checks": [vars(c) for c in checks]})
    else:
        for c in checks:
            mark = "[green]ok  [/green]" if c.ok else "[red]FAIL[/red]"
            stdout.print(f"{mark} {c.name:<9} ", end="")
            stdout.print(c.detail + (f"\n              fix: {c.fix}" if not c.ok and c.fix else ""), markup=False)
    if not ok:
        raise typer.Exit(1)
