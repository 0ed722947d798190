"""`warmstart key generate`: an Ed25519 key pair for signing snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors
from warmstart.cli.output import result as show

app = typer.Typer(
    help="Keys: Ed25519 pairs that sign and verify snapshots (generate), snapshot encryption keys (encryption).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command()
@handle_errors
def generate(
    path: Annotated[Path, typer.Argument(help="Private key file to create (0600); the public key goes to PATH.pub.")],
    json_output: options.JsonOpt = False,
) -> None:
    """Create a new Ed25519 signing key (never overwrites)."""
    from warmstart.security.signing import generate as generate_key

    public, key_id = generate_key(path)
    if json_output:
        emit_json({"private_key": str(path), "public_key": str(public), "key_id": key_id})
        return
    show(
        f"wrote private key {path} (keep it secret) and public key {public} (key id {key_id}); sign with "
        f"--sign-key {path}, verify with --trust-key {public}"
    )


@app.command()
@handle_errors
def encryption(
    path: Annotated[Path, typer.Argument(help="Key file to create (32 random bytes as hex, 0600).")],
    json_output: options.JsonOpt = False,
) -> None:
    """Create a key that encrypts snapshots holding secrets (secrets_during_warmup); never overwrites."""
    from warmstart.security.crypt import KEY_ENV
    from warmstart.security.crypt import generate as generate_key

    key_id = generate_key(path)
    if json_output:
        emit_json({"key_file": str(path), "key_id": key_id})
        return
    show(f"wrote snapshot key {path} (key id {key_id}); build with --encryption-key {path} or ${KEY_ENV}={path}, "
         "and give the same file to every host that restores")
