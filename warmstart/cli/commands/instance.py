"""`warmstart logs` and `warmstart exec`: docker-style verbs for the instances warmstart started (only those)."""

from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import handle_errors
from warmstart.cli.output import result as show
from warmstart.errors import UsageError
from warmstart.instances import ours


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
def exec(  # noqa: A001 - the verb users know
    name: Annotated[str, typer.Argument(help="Instance name (see `warmstart ps`).")],
    command: Annotated[list[str], typer.Argument(help="Command to run in the instance (after --).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before the command is given up on.")] = 60,
    engine: options.EngineOpt = None,
) -> None:
    """Run a command in an instance; prints its output and exits with its exit code."""
    if not command:
        raise UsageError("give the command to run after --")
    eng = options.engine_for(engine)
    result = eng.exec(container=ours(engine=eng, names=[name])[0], command=command, timeout=timeout)
    if result.output:
        show(result.output)
    raise typer.Exit(result.exit_code)
