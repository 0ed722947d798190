"""A Kubernetes checkpoint archive (kubelet's /var/lib/kubelet/checkpoints/checkpoint-*.tar, `crictl checkpoint
--export`) imported into the cache as a "cri" snapshot, verified as the untrusted input it is.

The archive is written by the CRI runtime (containerd `internal/cri/server/container_checkpoint_linux.go`, CRI-O
`internal/lib/checkpoint.go`) in the layout checkpointctl reads (`lib/metadata.go`): JSON metadata at the top, CRIU's
images under `checkpoint/`, the container's changed files in `rootfs-diff.tar`. What goes wrong with such archives
anchors the checks here: a restore that took its mounts from the archive instead of the pod (CVE-2024-8676), and
entries that are links or climb out of the unpack directory (containerd's hardening of its restore unpack). So:
only regular files under known names, no duplicate, no link, bounded sizes, each JSON file parsed with its shape
checked, the CRIU images stored flat under images/ (as a sandbox snapshot keeps them), the bind mounts recorded and
never carried into an exported image (`ckptimage.py`), and the memory scanned for secrets before publishing.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from warmstart import __version__
from warmstart.cache.manifest import Manifest
from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core.bounded import loads_json
from warmstart.core.spec import validate_app_name, validate_tag
from warmstart.errors import ManifestError, UsageError
from warmstart.security.secretenv import raise_if_found, scan

MODE = "cri"  # Manifest.engine["mode"] of an imported Kubernetes checkpoint
# Member names: checkpointctl lib/metadata.go (ConfigDumpFile, SpecDumpFile, StatusDumpFile, CheckpointDirectory,
# RootFsDiffTar, DeletedFilesFile, NetworkStatusFile, StatsDump, DumpLogFile, StatusFile) and the files containerd's
# CheckpointContainer adds (container.log) or podman/CRI-O write beside them (bind.mounts, devshm-checkpoint.tar,
# restore.log, pod.options for pod checkpoints).
CONFIG_DUMP, SPEC_DUMP, STATUS_DUMP = "config.dump", "spec.dump", "status.dump"
CHECKPOINT_DIR, ROOTFS_DIFF = "checkpoint", "rootfs-diff.tar"
TOP_FILES = frozenset({CONFIG_DUMP, SPEC_DUMP, STATUS_DUMP, ROOTFS_DIFF, "deleted.files", "network.status",
                       "stats-dump", "dump.log", "status", "container.log", "bind.mounts", "devshm-checkpoint.tar",
                       "restore.log"})
JSON_FILES = (CONFIG_DUMP, SPEC_DUMP, STATUS_DUMP)
JSON_LIMIT = 4 << 20  # each metadata file is a few KB
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")  # a CRIU image file name (core-1.img, ...)
REQUIRED_IMAGES = ("inventory.img", "pstree.img")  # every CRIU dump has them (criu/image-desc.c)
# An image reference as CRI runtimes record it: name[:tag][@sha256:hex], or an image ID (sha256:hex).
IMAGE_REF_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|[a-z0-9][A-Za-z0-9._:/-]{0,254}(?:@sha256:[0-9a-f]{64})?)$")
MAX_BYTES = 32 << 30  # as a registry artifact (cache/registry.py MAX_ARTIFACT_BYTES)


@dataclass(frozen=True)
class Imported:
    snapshot: Snapshot
    container: str  # the container's name in its pod
    pod: str  # namespace/name, "" when the archive does not say
    base_image: str
    bind_mounts: list[str]  # "DESTINATION <- SOURCE" as the archive's spec recorded them (not carried further)


def import_archive(
    store: SnapshotStore, archive: Path, *, ref: str, secrets: Mapping[str, str],
    signer: Callable[[Manifest], str] | None = None, progress: Callable[[str], None] = lambda _: None,
) -> Imported:
    """Verify `archive` and publish it as snapshot `ref` (APP[:TAG]); UsageError for anything not a checkpoint
    archive as CRI runtimes write them, SecretLeakError (nothing published) when the memory holds a secret."""
    app, _, tag = ref.partition(":")
    validate_app_name(app)
    if tag:
        validate_tag(tag)
    fh = _open_regular(archive)
    with fh:
        digest = _sha256(fh)
        fh.seek(0)
        with store.staging(app) as stage:
            progress(f"verifying {archive.name}")
            _unpack(fh, stage, source=archive.name)
            meta = _metadata(stage, source=archive.name)
            progress("scanning the checkpoint's memory for secrets")
            raise_if_found(scan(stage, secrets), app=app, outcome="nothing was imported")
            manifest = _manifest(app, tag or digest[:12], digest, meta)
            snapshot = store.publish(stage, manifest, signer=signer)
    return Imported(snapshot, meta["container"], meta["pod"], meta["image"], meta["bind_mounts"])


def _open_regular(path: Path) -> IO[bytes]:
    """The archive opened for reading, refused unless a regular file (a FIFO would block, a device never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint archive {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a regular file: expected a checkpoint archive (.tar)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _sha256(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _unpack(fh: IO[bytes], stage: Path, *, source: str) -> None:
    """Stream the archive's members into `stage`: top-level metadata files as they are, `checkpoint/NAME` as
    images/NAME. Any other member (a link, a device, a nested or unknown path, a second copy of a name) refuses the
    whole archive: nothing of it is published."""
    (stage / "images").mkdir(mode=0o700)
    seen: set[str] = set()
    total = 0
    try:
        tar = tarfile.open(fileobj=fh, mode="r|*")
        for member in tar:
            name = _member_name(member, source)
            if name is None:
                continue
            if name in seen:
                raise UsageError(f"checkpoint archive {source}: {member.name[:80]!r} appears twice: refused")
            seen.add(name)
            total += member.size
            if total > MAX_BYTES:
                raise UsageError(f"checkpoint archive {source} holds more than {MAX_BYTES >> 30} GiB: refused")
            src = tar.extractfile(member)
            assert src is not None  # a regular file (checked by _member_name)
            _write_new(stage / name, src, member.size)
    except (tarfile.TarError, EOFError) as exc:
        raise UsageError(f"{source} is not a readable tar archive: {exc}") from exc
    missing = [n for n in (CONFIG_DUMP, SPEC_DUMP) if n not in seen]
    missing += [f"{CHECKPOINT_DIR}/{n}" for n in REQUIRED_IMAGES if f"images/{n}" not in seen]
    if missing:
        raise UsageError(f"{source} is not a container checkpoint archive: it lacks {', '.join(missing)}",
                         hint="kubelet writes them under /var/lib/kubelet/checkpoints/ (crictl checkpoint --export)")


def _member_name(member: tarfile.TarInfo, source: str) -> str | None:
    """Where a member goes inside the staged snapshot; None for the directories the layout has."""
    name = member.name.removeprefix("./").rstrip("/") if member.name not in (".", "./") else ""
    if member.isdir() and name in ("", CHECKPOINT_DIR):
        return None
    if member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
        return None
    kind = "a directory" if member.isdir() else "a link" if member.issym() or member.islnk() else \
        "a regular file" if member.isreg() else "a special file"
    if not member.isreg():
        raise UsageError(f"checkpoint archive {source}: {member.name[:80]!r} is {kind}: only regular files are "
                         "expected there; refused")
    head, _, rest = name.partition("/")
    if head == CHECKPOINT_DIR and IMAGE_NAME_RE.match(rest):
        return f"images/{rest}"
    if name in TOP_FILES:
        return name
    raise UsageError(f"checkpoint archive {source}: unexpected member {member.name[:80]!r}: refused",
                     hint="an archive written by a CRI runtime holds only the checkpointctl layout")


def _write_new(dest: Path, src: IO[bytes], size: int) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise UsageError(f"checkpoint archive member {dest.name} ends early: refused")
            out.write(chunk)
            left -= len(chunk)


def _load_json(stage: Path, name: str, source: str) -> dict[str, Any]:
    path = stage / name
    if path.stat().st_size > JSON_LIMIT:
        raise UsageError(f"checkpoint archive {source}: {name} is larger than {JSON_LIMIT >> 20} MiB: refused")
    try:
        value = loads_json(path.read_bytes())
    except ValueError as exc:
        raise UsageError(f"checkpoint archive {source}: {name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"checkpoint archive {source}: {name} is not a JSON object")
    return value


def _metadata(stage: Path, *, source: str) -> dict[str, Any]:
    """What the archive says about its container, with the shape of every field used checked."""
    config = _load_json(stage, CONFIG_DUMP, source)
    spec = _load_json(stage, SPEC_DUMP, source)
    if (stage / STATUS_DUMP).exists():
        _load_json(stage, STATUS_DUMP, source)

    def text(obj: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
            raise UsageError(f"checkpoint archive {source}: {where}.{key}: expected "
                             f"{'an image reference' if pattern else 'a string'}, got {str(value)[:80]!r}")
        return value

    image = text(config, "rootfsImageName", CONFIG_DUMP, IMAGE_REF_RE)
    image_ref = text(config, "rootfsImageRef", CONFIG_DUMP, IMAGE_REF_RE)
    text(config, "id", CONFIG_DUMP)
    annotations = spec.get("annotations") or {}
    mounts = spec.get("mounts") or []
    if not isinstance(annotations, dict) or not isinstance(mounts, list) or not all(
            isinstance(m, dict) and all(isinstance(m.get(k, ""), str) for k in ("destination", "type", "source"))
            for m in mounts):
        raise UsageError(f"checkpoint archive {source}: {SPEC_DUMP}: annotations and mounts are not an OCI "
                         "runtime spec's")
    container = str(annotations.get("io.kubernetes.cri.container-name")  # containerd
                    or annotations.get("io.kubernetes.container.name")  # CRI-O
                    or config.get("name") or "")[:253]
    pod_name = str(annotations.get("io.kubernetes.cri.sandbox-name") or annotations.get("io.kubernetes.pod.name")
                   or "")[:253]
    namespace = str(annotations.get("io.kubernetes.cri.sandbox-namespace")
                    or annotations.get("io.kubernetes.pod.namespace") or "")[:253]
    binds = [f"{m.get('destination', '')} <- {m.get('source', '')}" for m in mounts if is_bind(m)]
    return {"image": image, "image_ref": image_ref, "container": container,
            "pod": f"{namespace}/{pod_name}" if pod_name else "", "bind_mounts": binds,
            "runtime": str(config.get("runtime", ""))[:80]}


def is_bind(mount: dict[str, Any]) -> bool:
    """A bind mount in an OCI runtime spec: its type, or (runc's older form) its options say so."""
    return mount.get("type") == "bind" or "bind" in (mount.get("options") or [])


def _manifest(app: str, tag: str, digest: str, meta: dict[str, Any]) -> Manifest:
    try:
        return Manifest(
            app=app, tag=tag, key=digest,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            warmstart_version=__version__,
            engine={"name": MODE, "mode": MODE, "runtime": meta["runtime"]},
            image={"ref": meta["image"], "id": meta["image_ref"]},
            spec={"image": meta["image"]},
            key_inputs={"source": "kubernetes checkpoint archive", "archive_sha256": digest,
                        "container": meta["container"], "pod": meta["pod"], "bind_mounts": meta["bind_mounts"]},
        )
    except (TypeError, ValueError) as exc:  # pragma: no cover - the fields are checked above
        raise ManifestError(f"cannot describe the imported checkpoint: {exc}") from exc
