"""`warmstart push` and `warmstart pull`: snapshots through an OCI registry."""

from __future__ import annotations

from typing import Annotated

import typer

from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress
from warmstart.cli.output import result as show

Insecure = Annotated[
    bool, typer.Option("--insecure", help="Plain HTTP (default only for loopback registries, as docker does).")
]


@handle_errors
def push(
    snapshot: Annotated[str, typer.Argument(metavar="APP[:TAG]", help="Snapshot to push (newest without a tag).")],
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="HOST[:PORT]/REPOSITORY[:TAG]; the tag defaults to APP-TAG.")
    ],
    insecure: Insecure = False,
    sign_key: options.SignKey = None,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Push a snapshot to an OCI registry (credentials from podman/docker login or the environment)."""
    from warmstart.cache.registry import Reference, Registry
    from warmstart.security import signing

    store = options.open_store(cache_dir)
    snap = store.resolve(snapshot)[0]
    target = Reference.parse(ref, default_tag=f"{snap.manifest.app}-{snap.manifest.tag}")
    key = signing.signing_key(sign_key)
    if key is not None:
        store.add_signature(snap, signing.sign(snap.manifest, key))
    result = Registry(target, insecure=insecure or None).push(snap, progress=progress)
    if json_output:
        emit_json(result)
        return
    show(f"pushed {result.snapshot} to {result.reference} ({result.size_bytes / 1e6:.1f} MB, {result.digest})")


@handle_errors
def pull(
    ref: Annotated[str, typer.Argument(metavar="REF", help="HOST[:PORT]/REPOSITORY:TAG")],
    insecure: Insecure = False,
    require_signed: options.RequireSigned = False,
    trust_key: options.TrustKey = None,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Pull a snapshot into the local cache; it is verified (files, and signature by policy) before it becomes
    visible."""
    from warmstart.cache.registry import Reference, Registry

    trust = options.trust_policy(trust_key, require_signed)
    registry = Registry(Reference.parse(ref, untagged=True), insecure=insecure or None)
    result = registry.pull(options.open_store(cache_dir), trust=trust, progress=progress)
    if json_output:
        emit_json(result)
        return
    show(f"pulled {result.reference} as {result.snapshot} ({result.size_bytes / 1e6:.1f} MB)")
