"""Kubernetes checkpoint archives as untrusted input (cache/kubeimport.py) and the checkpoint image made of them
(cache/ckptimage.py): what is accepted, what is refused in one line with nothing left behind, and what the image
carries. Synthetic archives in the layout CRI runtimes write; the real runtime is in tests/podman/test_kubernetes.py."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from warmstart.cache import ckptimage
from warmstart.cache.kubeimport import import_archive
from warmstart.cache.store import SnapshotStore
from warmstart.errors import SecretLeakError, UsageError

CONFIG = {"id": "a" * 64, "name": "web_web-0_default_u1_0", "rootfsImageName": "registry.example/web:1",
          "rootfsImageRef": "registry.example/web@sha256:" + "b" * 64, "runtime": "io.containerd.runc.v2"}
SPEC = {"ociVersion": "1.2.0", "process": {"args": ["python3", "app.py"]},
        "annotations": {"io.kubernetes.cri.container-name": "web", "io.kubernetes.cri.sandbox-name": "web-0",
                        "io.kubernetes.cri.sandbox-namespace": "default"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containerd/sandboxes/x/hosts",
                    "options": ["rbind"]},
                   {"destination": "/data", "type": "bind", "source": "/srv/host-data", "options": ["rbind"]}],
        "linux": {"namespaces": [{"type": "ipc", "path": "/proc/77/ns/ipc"}, {"type": "mount"}]}}


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo,
                                                                                                   bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, data


def good_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [member("config.dump", json.dumps(CONFIG).encode()), member("spec.dump", json.dumps(SPEC).encode()),
            member("checkpoint", kind=tarfile.DIRTYPE), member("checkpoint/inventory.img", b"inv"),
            member("checkpoint/pstree.img", b"tree"), member("checkpoint/pages-1.img", b"\0" * 4096),
            member("rootfs-diff.tar", b""), member("dump.log", b"(00.01) Dumping finished successfully\n")]


def write_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "cache").open()


def nothing_left(store: SnapshotStore) -> bool:
    return not store.snapshots_of() and not any(store.staging_root.iterdir())


def test_an_archive_as_cri_runtimes_write_it_becomes_a_verified_cri_snapshot(store: SnapshotStore,
                                                                            tmp_path: Path) -> None:
    done = import_archive(store, write_archive(tmp_path / "a.tar", good_members()), ref="web:v1", secrets={})
    snap = done.snapshot
    assert snap.ref == "web:v1" and snap.manifest.mode == "cri" and snap.manifest.engine["name"] == "cri"
    assert {"config.dump", "spec.dump", "images/inventory.img", "images/pages-1.img"} <= set(snap.manifest.files)
    assert done.container == "web" and done.pod == "default/web-0" and done.base_image == "registry.example/web:1"
    assert "/data <- /srv/host-data" in done.bind_mounts  # recorded, so a reviewer sees what the pod had
    store.verify(snap, full=True)
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in snap.path.rglob("*") if p.is_file())


HOSTILE: dict[str, tuple[Callable[[list[Any]], list[Any]], str]] = {
    "symlink": (lambda m: [*m, member("checkpoint/x.img", kind=tarfile.SYMTYPE, link="/etc/shadow")], "is a link"),
    "hardlink": (lambda m: [*m, member("dump.log2", kind=tarfile.LNKTYPE, link="config.dump")], "is a link"),
    "device": (lambda m: [*m, member("checkpoint/dev.img", kind=tarfile.CHRTYPE)], "a special file"),
    "climbs out": (lambda m: [*m, member("../../etc/cron.d/x", b"* * * * * root sh")], "unexpected member"),
    "absolute": (lambda m: [*m, member("/etc/passwd", b"x")], "unexpected member"),
    "nested": (lambda m: [*m, member("checkpoint/sub/core.img", b"x")], "unexpected member"),
    "unknown": (lambda m: [*m, member("run.sh", b"#!/bin/sh")], "unexpected member"),
    "duplicate": (lambda m: [*m, member("config.dump", json.dumps(CONFIG).encode())], "appears twice"),
    "no config": (lambda m: m[1:], "lacks config.dump"),
    "no CRIU images": (lambda m: [x for x in m if "pstree" not in x[0].name], "lacks checkpoint/pstree.img"),
    "not JSON": (lambda m: [member("config.dump", b"{nope"), *m[1:]], "not valid JSON"),
    "bad image ref": (lambda m: [member("config.dump", json.dumps({**CONFIG, "rootfsImageName": "x; rm -rf /"})
                                        .encode()), *m[1:]], "expected an image reference"),
    "bad mounts": (lambda m: [m[0], member("spec.dump", json.dumps({**SPEC, "mounts": "all"}).encode()), *m[2:]],
                   "not an OCI runtime spec's"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_whole_in_one_line(case: str, store: SnapshotStore, tmp_path: Path) -> None:
    mutate, expected = HOSTILE[case]
    archive = write_archive(tmp_path / "a.tar", mutate(good_members()))
    with pytest.raises(UsageError) as err:
        import_archive(store, archive, ref="web:v1", secrets={})
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert nothing_left(store)
    assert not (tmp_path.parent / "etc").exists()


def test_not_a_tar_and_not_a_file_are_refused(store: SnapshotStore, tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"\x7fELF" + b"\0" * 600)
    with pytest.raises(UsageError, match="not a readable tar archive"):
        import_archive(store, tmp_path / "junk.tar", ref="web", secrets={})
    with pytest.raises(UsageError, match="not a regular file"):
        import_archive(store, tmp_path, ref="web", secrets={})
    os.mkfifo(tmp_path / "fifo.tar")
    with pytest.raises(UsageError, match="not a regular file"):  # refused without waiting for a writer
        import_archive(store, tmp_path / "fifo.tar", ref="web", secrets={})
    with pytest.raises(UsageError):
        import_archive(store, tmp_path / "junk.tar", ref="../web", secrets={})
    assert nothing_left(store)


def test_memory_holding_a_secret_is_not_imported(store: SnapshotStore, tmp_path: Path) -> None:
    members = good_members()
    members[5] = member("checkpoint/pages-1.img", b"\0" * 100 + b"token=ghp_" + b"A1b2C3d4" * 4 + b"Zz9Y" + b"\0")
    with pytest.raises(SecretLeakError, match="GitHub token"):
        import_archive(store, write_archive(tmp_path / "a.tar", members), ref="web:v1", secrets={})
    members[5] = member("checkpoint/pages-1.img", b"\0" * 64 + "hunter2-value-ü".encode("utf-16-le"))
    with pytest.raises(SecretLeakError, match="DB_PASSWORD"):
        import_archive(store, write_archive(tmp_path / "b.tar", members), ref="web:v1",
                       secrets={"DB_PASSWORD": "hunter2-value-ü"})
    assert nothing_left(store)


def test_the_checkpoint_image_carries_every_runtimes_marker_and_no_host_path(store: SnapshotStore,
                                                                             tmp_path: Path) -> None:
    snap = import_archive(store, write_archive(tmp_path / "a.tar", good_members()), ref="web:v1",
                          secrets={}).snapshot
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    built = ckptimage.build(snap, tmp_path / "s1")
    assert built.manifest.digest == ckptimage.build(snap, tmp_path / "s2").manifest.digest  # reproducible
    manifest = json.loads(built.manifest.data)  # type: ignore[arg-type]
    for key in (ckptimage.CONTAINERD_NAME, ckptimage.CRIO_NAME, ckptimage.PODMAN_NAME):
        assert manifest["annotations"][key] == CONFIG["name"]
    assert manifest["annotations"][ckptimage.PODMAN_RUNTIME] == "runc"
    with tarfile.open(built.layer.data) as tar:  # type: ignore[arg-type]
        names = tar.getnames()
        spec = json.load(tar.extractfile("spec.dump"))  # type: ignore[arg-type]
        status = json.load(tar.extractfile("status.dump"))  # type: ignore[arg-type]
    assert {"checkpoint/inventory.img", "checkpoint/pages-1.img", "config.dump", "status.dump"} <= set(names)
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert {m["destination"] for m in binds} == {"/etc/hosts", "/data"} and all(m["source"] == "" for m in binds)
    assert spec["linux"]["namespaces"] == [{"type": "ipc"}, {"type": "mount"}]
    assert status["image"]["image"] == "registry.example/web:1"  # synthesized for containerd: CRI-O has none

    archive = tmp_path / "image.oci.tar"
    ckptimage.write_oci_archive(built, archive, name="registry.example/web-ckpt:v1")
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"][ckptimage.REF_NAME] == "registry.example/web-ckpt:v1"
    assert archive.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        ckptimage.write_oci_archive(built, archive, name="x")
    assert archive.stat().st_size > 0  # an existing file is never overwritten, nor removed


def test_only_cri_snapshots_are_exported(store: SnapshotStore, tmp_path: Path) -> None:
    snap = import_archive(store, write_archive(tmp_path / "a.tar", good_members()), ref="web:v1",
                          secrets={}).snapshot
    snap.manifest.engine["mode"] = "sandbox"
    with pytest.raises(UsageError, match="entrypoint mode"):
        ckptimage.require_cri(snap)
