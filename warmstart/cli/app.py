"""The `warmstart` command: a typer app with one module per verb."""

from __future__ import annotations

import typer

from warmstart import __version__
from warmstart.cli.commands import cache, key
from warmstart.cli.commands.build import build
from warmstart.cli.commands.debug import debug
from warmstart.cli.commands.doctor import doctor
from warmstart.cli.commands.entrypoint import entrypoint
from warmstart.cli.commands.instance import checkpoint, inspect, logs, migrate
from warmstart.cli.commands.instance import exec as exec_
from warmstart.cli.commands.ps import ps
from warmstart.cli.commands.registry import pull, push
from warmstart.cli.commands.run import run
from warmstart.cli.commands.serve import serve
from warmstart.cli.commands.stop import stop

app = typer.Typer(
    name="warmstart",
    help="Start services from a warm CRIU snapshot instead of booting them cold.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    rich_markup_mode=None,  # help text is plain: "[default: ...]" must show, not be read as rich markup
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(build)
app.command()(run)
app.command()(ps)
app.command()(stop)
app.command()(logs)
app.command(name="exec")(exec_)
app.command()(inspect)
app.command()(checkpoint)
app.command()(migrate)
app.command()(debug)
app.command()(doctor)
app.command()(serve)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(entrypoint)
app.command()(push)
app.command()(pull)
app.add_typer(cache.app, name="cache")
app.add_typer(key.app, name="key")


def _version(value: bool) -> None:
    if value:
        print(f"warmstart {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    pass
