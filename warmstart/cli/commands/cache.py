"""`warmstart cache ls | inspect | coredump | rm | prune | import | export`."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from warmstart.cache.store import Snapshot
from warmstart.cli import options
from warmstart.cli.output import emit_json, handle_errors, progress
from warmstart.cli.output import result as show
from warmstart.core.spec import parse_duration, parse_size
from warmstart.errors import UsageError

app = typer.Typer(help="List, inspect, remove and prune cached snapshots.", no_args_is_help=True,
                  rich_markup_mode=None)


def _summary(s: Snapshot) -> dict[str, Any]:
    m = s.manifest
    return {
        "snapshot": s.ref,
        "app": m.app,
        "tag": m.tag,
        "key": m.key,
        "created_at": m.created_at,
        "size_bytes": s.size,
        "image": m.image.get("ref"),
        "engine": m.engine.get("name"),
        "path": str(s.path),
        "post_copy_from": m.post_copy.get("page_server", ""),  # a post-copy migration's: its pages are there
    }


@app.command("ls")
@handle_errors
def ls(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]", help="Only this app's snapshots.")] = None,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """List snapshots, newest first."""
    snaps = options.open_store(cache_dir).snapshots_of(app_name)
    if json_output:
        emit_json({"snapshots": [_summary(s) for s in snaps]})
        return
    if not snaps:
        show("no snapshots")
        return
    show(f"{'SNAPSHOT':<40} {'CREATED':<25} {'SIZE':>10}  IMAGE")
    for s in snaps:
        d = _summary(s)
        show(f"{d['snapshot']:<40} {d['created_at'][:23]:<25} {d['size_bytes'] / 1e6:>8.1f}MB  {d['image']}")


@app.command()
@handle_errors
def inspect(
    ref: Annotated[str, typer.Argument(metavar="APP[:TAG]")],
    contents: Annotated[bool, typer.Option("--contents", help="Also decode what it holds with CRIU's decoder "
                                           "(pycriu): processes, memory, files, sockets, env names.")] = False,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Show a snapshot's manifest (the newest of the app without a tag)."""
    store = options.open_store(cache_dir)
    snap = store.resolve(ref)[0]
    health = store.health(snap)
    manifest = {
        **dataclasses.asdict(snap.manifest),
        "path": str(snap.path),
        "signed": snap.signature() is not None,
        "restores": {**health.to_dict(), "circuit": health.circuit()},
    }
    decoded = store.contents(snap) if contents else None
    if json_output:
        emit_json({**manifest, **({"contents": decoded} if decoded is not None else {})})
        return
    m = snap.manifest
    show(f"snapshot   {snap.ref}\npath       {snap.path}\ncreated    {m.created_at}\nkey        {m.key}")
    if m.mode == "cri":  # imported: what Kubernetes recorded, not a host of ours
        k = m.key_inputs
        show(f"image      {m.image.get('ref')} ({m.image.get('id', '')})\nsource     Kubernetes checkpoint of "
             f"container {k.get('container') or '?'}" + (f" of pod {k['pod']}" if k.get("pod") else "")
             + f", runtime {m.engine.get('runtime') or '?'}")
        for bind in k.get("bind_mounts") or []:
            show(f"bind mount {bind}")
    else:
        show(f"image      {m.image.get('ref')} ({m.image.get('id', '')[:19]})\n"
             f"engine     {m.engine.get('name')} {m.engine.get('version')}, {m.engine.get('runtime')} "
             f"{m.engine.get('runtime_version')}\nhost       {m.host.get('arch')} {m.host.get('kernel')}, "
             f"CRIU {m.host.get('criu_version')}, {m.host.get('cpu_model')}")
    for name, f in m.files.items():
        show(f"file       {name} {f['size'] / 1e6:.1f}MB sha256:{f['sha256'][:16]}")
    for name, value in m.timings.items():
        show(f"timing     {name} {value}{'' if name.endswith('_trials') else 's'}")
    if m.holds:
        show("holds      " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in m.holds.items()))
    show(f"signed     {'yes' if manifest['signed'] else 'no'}")
    circuit = health.circuit()
    detail = (
        f", {health.consecutive_failures} failed in a row (last: {health.last_error})"
        if health.consecutive_failures
        else ""
    )
    show(f"restores   circuit {circuit}{detail}")
    if decoded is not None:
        _show_contents(decoded)


@app.command()
@handle_errors
def coredump(
    ref: Annotated[str, typer.Argument(metavar="APP[:TAG]")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Directory for core.PID files (created 0700; existing "
                                      "cores are not overwritten).")],
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Write an ELF core file per process of a snapshot, for gdb (`gdb EXECUTABLE DIR/core.PID`)."""
    store = options.open_store(cache_dir)
    snap = store.resolve(ref)[0]
    try:
        cores = store.coredump(snap, out)
    except FileExistsError as exc:
        raise UsageError(f"{exc.filename} exists already: choose an empty --output directory") from exc
    except OSError as exc:
        raise UsageError(f"cannot write cores into {out}: {exc.strerror or exc}") from exc
    if json_output:
        emit_json({"snapshot": snap.ref, "cores": [dataclasses.asdict(c) for c in cores]})
        return
    for c in cores:
        show(f"{c.path}  pid {c.pid} ({c.comm}), {c.threads} thread{'s' if c.threads != 1 else ''}, "
             f"{c.size_bytes / 1e6:.1f}MB")


def _show_contents(decoded: dict[str, Any]) -> None:
    for p in decoded["processes"]:
        show(f"process    {p['pid']} {' '.join(p['command']) or p['comm']} ({p['threads']} thread"
             f"{'s' if p['threads'] != 1 else ''}, {p['memory_bytes'] / 2**20:.1f} MiB dumped)")
        show(f"  env      {' '.join(p['env_names']) or '-'} (names only)")
        for f in p["fds"]:
            what = f.get("path") or (f"{f.get('family')} {f.get('protocol', '')} {f.get('state')} :{f.get('port')}"
                                     if f["kind"] == "socket" else f.get("id", ""))
            show(f"  fd {f['fd']:<5} {f['kind']} {what}".rstrip())
    show(f"listening  {', '.join(map(str, decoded['listening'])) or 'none'}; "
         f"{decoded['established']} established connection(s)")


@app.command()
@handle_errors
def rm(
    refs: Annotated[list[str], typer.Argument(metavar="APP[:TAG]...", help="A tag, or every snapshot of an app.")],
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Remove snapshots."""
    store = options.open_store(cache_dir)
    doomed = [s for ref in refs for s in store.resolve(ref)]
    for s in doomed:
        store.remove(s)
    if json_output:
        emit_json({"removed": [s.ref for s in doomed]})
        return
    show("\n".join(f"removed {s.ref}" for s in doomed))


@app.command()
@handle_errors
def prune(
    keep: Annotated[int | None, typer.Option("--keep", help="Keep the newest N snapshots of each app.")] = None,
    max_size: Annotated[str | None, typer.Option("--max-size", help="Keep the newest that fit, e.g. 2G.")] = None,
    older_than: Annotated[str | None, typer.Option("--older-than", help="Remove older than, e.g. 7d, 12h.")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app's snapshots.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (a terminal is asked before removing).")] = False,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Remove old snapshots by count, total size and age (and all quarantined ones)."""
    from warmstart.cache.prune import prune as prune_cache

    # Units required: "--older-than 7" once removed 598 MB of snapshots older than 7 seconds.
    age = parse_duration(older_than) if older_than is not None and re.search(r"[a-z]\s*$", older_than) else None
    if older_than is not None and (age is None or age <= 0):
        raise UsageError(f"invalid --older-than {older_than!r}: expected a duration with a unit, e.g. 30m, 12h, 7d")
    store = options.open_store(cache_dir)
    size = parse_size(max_size, unit_required=True) if max_size is not None else None
    ask = not dry_run and not yes and not json_output and sys.stdin.isatty() and sys.stderr.isatty()
    if ask:
        plan = prune_cache(store, keep=keep, max_size=size, older_than=age, app=app_name, dry_run=True)
        if not plan.removed and not plan.quarantine_removed:
            show("nothing to remove")
            return
        for ref in plan.removed:
            show(f"would remove {ref}")
        if not typer.confirm(f"remove {len(plan.removed)} snapshots ({plan.freed_bytes / 1e6:.1f} MB) and "
                             f"{plan.quarantine_removed} quarantined?", err=True):
            progress("nothing removed")
            return
    result = prune_cache(store, keep=keep, max_size=size, older_than=age, app=app_name, dry_run=dry_run)
    if json_output:
        emit_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    for ref in result.removed:
        show(f"{verb} {ref}")
    show(
        f"{verb} {len(result.removed)} snapshots ({result.freed_bytes / 1e6:.1f} MB) and "
        f"{result.quarantine_removed} quarantined; kept {len(result.kept)}"
    )


@app.command("import")
@handle_errors
def import_(
    archive: Annotated[Path, typer.Argument(help="A Kubernetes checkpoint archive (kubelet's "
                                            "/var/lib/kubelet/checkpoints/checkpoint-*.tar, crictl checkpoint).")],
    ref: Annotated[str, typer.Option("--as", metavar="APP[:TAG]", help="The snapshot to make of it.")],
    secret_env: Annotated[list[str] | None, typer.Option(
        "--secret-env", metavar="NAME", help="Refuse the import when the memory holds the value of this variable "
        "of warmstart's environment (repeatable); credential shapes are always looked for.")] = None,
    sign_key: options.SignKey = None,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Verify a Kubernetes checkpoint archive and store it as a snapshot (inspect, sign, push, export it)."""
    from warmstart.cache.kubeimport import import_archive
    from warmstart.security import secretenv, signing

    key = signing.signing_key(sign_key)
    done = import_archive(options.open_store(cache_dir), archive, ref=ref,
                          secrets=secretenv.values_named(list(secret_env or [])),
                          signer=(lambda m: signing.sign(m, key)) if key is not None else None, progress=progress)
    if json_output:
        emit_json({"snapshot": done.snapshot.ref, "path": str(done.snapshot.path), "container": done.container,
                   "pod": done.pod, "image": done.base_image, "bind_mounts": done.bind_mounts,
                   "size_bytes": done.snapshot.size})
        return
    show(f"imported {done.snapshot.ref} (container {done.container or '?'}{' of pod ' + done.pod if done.pod else ''}"
         f", image {done.base_image}, {done.snapshot.size / 1e6:.1f} MB)")
    for bind in done.bind_mounts:
        show(f"bind mount {bind} (recorded; an exported image carries the destination only)")


@app.command()
@handle_errors
def export(
    ref: Annotated[str, typer.Argument(metavar="APP[:TAG]")],
    image: Annotated[str, typer.Option("--checkpoint-image", metavar="IMAGE",
                                       help="Name of the checkpoint OCI image (REGISTRY/REPO:TAG to push).")],
    push: Annotated[bool, typer.Option("--push", help="Push it to IMAGE's registry instead of loading it into the "
                                       "local engine.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also write it as an OCI archive file "
                                                "(for `ctr images import`, skopeo).")] = None,
    engine: options.EngineOpt = None,
    cache_dir: options.CacheDir = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Publish a Kubernetes checkpoint snapshot as a checkpoint image that CRI-O, containerd and podman restore."""
    from warmstart.cache import ckptimage

    if output is not None and output.exists():
        raise UsageError(f"{output} exists already: choose a new file for --output")
    done = ckptimage.export(options.open_store(cache_dir), ref, image=image, push=push,
                            engine=None if push else options.engine_for(engine), output=output, progress=progress)
    if json_output:
        emit_json(done)
        return
    how = "pushed" if done["pushed"] else "loaded into local storage"
    show(f"{done['image']} {how} ({done['size_bytes'] / 1e6:.1f} MB, {done['digest']})"
         + (f"; OCI archive {done['archive']}" if done["archive"] else ""))
