"""The two CLI fronts of `run` (the lean argparse path on the restore path, and the typer command for help and
usage errors) must accept exactly the same options and mean the same by them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer.main

from warmstart.cli.app import app
from warmstart.cli.plain import lean_run, run_parser


def _typer_run_options() -> set[str]:
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts if opt.startswith("-")} - {"-h", "--help"}


def test_lean_and_typer_run_accept_the_same_options() -> None:
    lean = {opt for action in run_parser()._actions for opt in action.option_strings}
    assert lean == _typer_run_options()


def test_lean_run_hands_help_and_unknown_options_to_the_full_cli() -> None:
    assert lean_run(["--help"]) is None
    assert lean_run(["app", "--bogus"]) is None
    assert lean_run([]) is None


def test_run_does_not_import_typer_or_rich() -> None:
    code = ("import sys; from warmstart.cli.plain import run_parser;"
            " import warmstart.restore.launch, warmstart.engines.podman;"
            "bad = [m for m in ('typer', 'rich', 'click', 'tenacity', 'http.client', 'docker') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_usage_errors_read_like_every_other_error() -> None:
    """click's own "Usage: ... Error: ..." block is replaced by the one error style (and a JSON object with --json)."""
    warmstart = str(Path(sys.executable).with_name("warmstart"))
    res = subprocess.run([warmstart, "run", "--bogus", "x"], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("warmstart: error: No such option: --bogus")
    assert "hint: `warmstart run --help` lists the options" in res.stderr
    res = subprocess.run([warmstart, "cache", "prune", "--keep", "--json"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("warmstart: error: ")
    assert json.loads(res.stdout)["error"]["exit_code"] == 2
    assert "Traceback" not in res.stderr


def test_help_shows_defaults_and_completion_is_offered() -> None:
    warmstart = str(Path(sys.executable).with_name("warmstart"))
    run_help = " ".join(subprocess.run([warmstart, "run", "--help"], capture_output=True, text=True).stdout.split())
    assert "[default: $WARMSTART_CACHE or" in run_help and "[default: ./warmstart.toml if present]" in run_help
    root = subprocess.run([warmstart, "--help"], capture_output=True, text=True).stdout
    assert "--install-completion" in root and "--show-completion" in root
    shown = subprocess.run([warmstart, "--show-completion", "bash"], capture_output=True, text=True,
                           env={**os.environ, "SHELL": "/bin/bash"})
    assert shown.returncode == 0 and "complete" in shown.stdout
