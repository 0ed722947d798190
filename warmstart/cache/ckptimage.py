"""A "cri" snapshot published as a checkpoint OCI image: the one image that CRI-O, containerd and podman each
recognise as a checkpoint, pushed to a registry or loaded into the local engine.

No runtime writes such an image for the others (checkpointctl#174, containerd#10093), so the image carries every
runtime's marker at once. Its single layer holds the checkpoint in the archive layout they all read
(checkpointctl `lib/metadata.go`: config.dump, spec.dump, status.dump, checkpoint/, rootfs-diff.tar, ...). Only a
snapshot of a whole container (mode "cri") fits: a sandbox snapshot is the dump of an app under warmstart-init,
restored by that init inside an ordinary container, which Kubernetes runs as the entrypoint mode instead.

The image never carries the host paths the original pod had bound (CVE-2024-8676: a runtime that took mounts
from the checkpoint instead of the pod gave a restored container host paths its pod never asked for): the
destinations stay (CRIU maps them), the sources are emptied, and namespace paths of the old node are dropped.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warmstart.cache.kubeimport import CHECKPOINT_DIR, CONFIG_DUMP, MODE, SPEC_DUMP, STATUS_DUMP, is_bind
from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core.bounded import loads_json
from warmstart.engines.base import Engine
from warmstart.errors import EngineError, UsageError

# The markers, each read from the image's manifest annotations (containerd reads the target it resolves, which for
# a single-platform image is this manifest):
CONTAINERD_NAME = "org.criu.checkpoint.container.name"  # checkpointctl lib/annotations.go CheckpointAnnotationName,
# read by containerd 2.1-2.3 internal/cri/server/container_checkpoint_linux.go checkIfCheckpointOCIImage
CRIO_NAME = "io.kubernetes.cri-o.annotations.checkpoint.name"  # CRI-O pkg/annotations CheckpointAnnotationName
PODMAN_NAME = "io.podman.annotations.checkpoint.name"  # podman libpod/define/annotations.go CheckpointAnnotationName
PODMAN_IMAGE_NAME = "io.podman.annotations.checkpoint.rootfsImageName"  # ...CheckpointAnnotationRootfsImageName
# ...CheckpointAnnotationRuntimeName: podman's IsCheckpointImage (cmd/podman/utils/utils.go) takes an image for a
# checkpoint only with it, and only when it names the host's OCI runtime; CRI runtimes restore with runc.
PODMAN_RUNTIME = "io.podman.annotations.checkpoint.runtime.name"
CRIU_IMAGE_NAME = "org.criu.checkpoint.rootfsImageName"  # checkpointctl CheckpointAnnotationRootfsImageName
CRIU_ENGINE = "org.criu.checkpoint.engine.name"  # checkpointctl CheckpointAnnotationEngine
REF_NAME = "org.opencontainers.image.ref.name"  # OCI image-spec annotations.md: the name in an index
CONTAINERD_IMAGE_NAME = "io.containerd.image.name"  # containerd `ctr images import`: the full name to give it
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes | Path  # small JSON in memory, the layer in a private file

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    @functools.cached_property
    def digest(self) -> str:  # once per blob: the layer holds the whole memory dump
        if isinstance(self.data, bytes):
            return "sha256:" + hashlib.sha256(self.data).hexdigest()
        h = hashlib.sha256()
        with self.data.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return "sha256:" + h.hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class CheckpointImage:
    config: Blob
    layer: Blob
    manifest: Blob
    annotations: dict[str, str]


def require_cri(snapshot: Snapshot) -> None:
    """UsageError unless the snapshot is a whole-container Kubernetes checkpoint."""
    mode = snapshot.manifest.mode
    if mode == MODE:
        return
    why = ("it is the dump of an app under warmstart-init, which a CRI runtime cannot restore; run it on Kubernetes "
           "with the entrypoint mode (docs/kubernetes.md)") if mode == "sandbox" else \
        "podman's whole-container archives record podman's mounts and config, which CRI runtimes do not accept"
    raise UsageError(f"snapshot {snapshot.ref} is a {mode} snapshot: {why}",
                     hint="checkpoint the container through Kubernetes (or crictl) and `warmstart cache import` it")


def build(snapshot: Snapshot, scratch: Path, *, base_image_id: str = "") -> CheckpointImage:
    """The image's blobs; the layer is written into `scratch` (a private dir: it holds process memory). With the
    local ID of the base image, config.dump also gets the fields podman's restore needs (CRI runtimes ignore them;
    podman refuses a config.dump without `rootfsImageID`)."""
    require_cri(snapshot)
    m = snapshot.manifest
    config_dump = _json(snapshot.path / CONFIG_DUMP)
    files = {name: snapshot.path / name for name in m.files}
    layer_path = scratch / "layer.tar"
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, CHECKPOINT_DIR)
        for name in sorted(files):
            arcname = f"{CHECKPOINT_DIR}/{name[len('images/'):]}" if name.startswith("images/") else name
            if name == SPEC_DUMP:
                _add_bytes(tar, arcname, _portable_spec(_json(files[name])))
            elif name == CONFIG_DUMP and base_image_id:  # podman's config.dump fields beside CRI's
                _add_bytes(tar, arcname, json.dumps({**config_dump, "rootfsImageID": base_image_id,
                                                     "runtime": "runc"}).encode())
            else:
                _add_file(tar, arcname, files[name])
        if STATUS_DUMP not in files:  # CRI-O's archives have none; containerd's restore reads it
            _add_bytes(tar, STATUS_DUMP, json.dumps(_status(config_dump, m.image["ref"])).encode())
    layer = Blob(LAYER_TYPE, layer_path)
    (scratch / "config.json").write_bytes(_canonical({
        "architecture": _arch(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created_by": f"warmstart cache export {m.ref}"}],
    }))
    config = Blob(CONFIG_TYPE, scratch / "config.json")
    name = str(config_dump.get("name") or m.app)
    annotations = {CONTAINERD_NAME: name, CRIO_NAME: name, PODMAN_NAME: name, PODMAN_IMAGE_NAME: m.image["ref"],
                   PODMAN_RUNTIME: "runc",
                   CRIU_IMAGE_NAME: m.image["ref"], CRIU_ENGINE: "warmstart", "io.warmstart.app": m.app,
                   "io.warmstart.tag": m.tag, "io.warmstart.key": m.key}
    manifest = Blob(MANIFEST_TYPE, _canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config.descriptor(),
        "layers": [layer.descriptor()], "annotations": annotations,
    }))
    return CheckpointImage(config, layer, manifest, annotations)


def write_oci_archive(image: CheckpointImage, dest: Path, *, name: str) -> None:
    """An OCI image layout in one tar (what `podman load`, `ctr images import` and skopeo's oci-archive: read),
    the image named `name`; written 0600."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**image.manifest.descriptor(),
                            "annotations": {REF_NAME: name, CONTAINERD_IMAGE_NAME: name,
                                            **{k: v for k, v in image.annotations.items()}}}]}
    fh = open(dest, "xb")  # noqa: SIM115  # never over an existing file; closed below
    try:
        with fh:
            dest.chmod(0o600)
            _write_layout(fh, image, index)
    except BaseException:
        dest.unlink(missing_ok=True)  # never a half-written archive
        raise


def _write_layout(fh: IO[bytes], image: CheckpointImage, index: dict[str, Any]) -> None:
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", _canonical(index))
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        for blob in (image.config, image.manifest, image.layer):
            name = "blobs/sha256/" + blob.digest.removeprefix("sha256:")
            if isinstance(blob.data, bytes):
                _add_bytes(tar, name, blob.data)
            else:
                _add_file(tar, name, blob.data)


def export(store: SnapshotStore, ref: str, *, image: str, push: bool, engine: Engine | None, output: Path | None,
           progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build the checkpoint image of snapshot `ref` and push it to IMAGE's registry, load it into `engine`'s local
    storage, and/or keep the OCI archive at `output`. The snapshot is verified first (every byte): an image is
    never made from files that do not match their manifest."""
    snap = store.resolve(ref)[0]
    require_cri(snap)
    store.verify(snap, full=True)
    pusher = _registry_push(image) if push else None  # credentials and reachability checked before the work
    base_id = ""
    if engine is not None:
        try:
            base_id = engine.image_id(image=snap.manifest.image["ref"])
        except EngineError:
            progress(f"base image {snap.manifest.image['ref']} is not here: podman will not restore this copy")
    with store.staging(snap.manifest.app) as scratch:
        progress(f"building checkpoint image {image} from {snap.ref}")
        built = build(snap, scratch, base_image_id=base_id)
        digest, size = built.manifest.digest, built.layer.size
        if pusher is not None:
            progress(f"pushing {image} ({size / 1e6:.1f} MB)")
            digest = pusher(built) or digest
        if engine is not None or output is not None:
            archive = output if output is not None else scratch / "image.oci.tar"
            write_oci_archive(built, archive, name=image)
            if engine is not None:
                progress(f"loading {image} into {engine.name}'s local storage")
                engine.load_image(archive=archive)
    return {"snapshot": snap.ref, "image": image, "digest": digest, "size_bytes": size, "pushed": push,
            "loaded": engine is not None, "archive": str(output) if output else "", "annotations": built.annotations}


def _registry_push(image: str) -> Callable[[CheckpointImage], str]:
    """A push to the registry and repository `image` names (credentials as for `warmstart push`)."""
    from warmstart.cache.registry import Reference, Registry  # only when pushing: it brings oras and requests

    registry = Registry(Reference.parse(image))

    def push(built: CheckpointImage) -> str:
        assert isinstance(built.config.data, Path) and isinstance(built.layer.data, Path)
        assert isinstance(built.manifest.data, bytes)
        return registry.push_image(config=(built.config.descriptor(), built.config.data),
                                   layers=[(built.layer.descriptor(), built.layer.data)],
                                   manifest=json.loads(built.manifest.data))

    return push


def _portable_spec(spec: dict[str, Any]) -> bytes:
    """spec.dump without what belonged to the old node: bind mount sources and namespace paths."""
    mounts = []
    for mount in spec.get("mounts") or []:
        if is_bind(mount):
            mount = {**mount, "source": ""}
        mounts.append(mount)
    linux = dict(spec.get("linux") or {})
    linux["namespaces"] = [{"type": ns.get("type")} for ns in linux.get("namespaces") or [] if isinstance(ns, dict)]
    return json.dumps({**spec, "mounts": mounts, "linux": linux}).encode()


def _status(config_dump: dict[str, Any], image: str) -> dict[str, Any]:
    """The CRI ContainerStatus fields containerd's restore reads from status.dump, for an archive without one."""
    name = str(config_dump.get("name") or "restored").split("_")[0]
    return {"metadata": {"name": name}, "image": {"image": image},
            "image_ref": str(config_dump.get("rootfsImageRef", ""))}


def _json(path: Path) -> dict[str, Any]:
    value = loads_json(path.read_bytes())
    if not isinstance(value, dict):
        raise UsageError(f"{path} is not a JSON object")
    return value


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, 0
    info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o600
    return info


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, kind=tarfile.DIRTYPE))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with path.open("rb") as fh:
        tar.addfile(_info(name, path.stat().st_size), fh)
