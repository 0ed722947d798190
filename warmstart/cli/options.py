"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from warmstart.cli import plain
from warmstart.errors import UsageError

CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Snapshot cache directory [default: $WARMSTART_CACHE or /var/lib/warmstart]",
                 show_default=False),
]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Container engine: podman [default: $WARMSTART_ENGINE or auto]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout for scripts.")]
SpecFile = Annotated[
    Path | None, typer.Option("--file", "-f", help="App spec file [default: ./warmstart.toml if present].")
]

RequireSigned = Annotated[bool, typer.Option(
    "--require-signed", help="Accept only snapshots signed by a trusted key [default: $WARMSTART_REQUIRE_SIGNED].")]
TrustKey = Annotated[list[Path] | None, typer.Option(
    "--trust-key", help="Trusted Ed25519 public key file (repeatable) [default: $WARMSTART_TRUSTED_KEYS].")]
SignKey = Annotated[Path | None, typer.Option(
    "--sign-key", help="Sign with this Ed25519 private key file [default: $WARMSTART_SIGNING_KEY].",
    show_default=False)]


load_spec_file = plain.load_spec_file
trust_policy = plain.trust_policy
open_store = plain.open_store
engine_for = plain.engine_for
port_bindings = plain.port_bindings


def require(value: str | None, flag: str) -> str:
    if not value:
        raise UsageError(f"missing option {flag}")
    return value
