"""Kubernetes paths for real: a checkpoint taken through CRI (containerd 2.1 + crictl, as a kubelet would),
imported into the cache, exported as a checkpoint image, restored through CRI with its state; the same image read
by podman and checkpointctl; tampering refused; the manifests users apply validated against the API types."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import COUNTER_IMAGE, Cli
from tests.helpers import free_port, json_when_up
from tests.podman.cri import CRI_DIR, Cri, running_cri

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTCTL = Path("/opt/warmstart/criu/bin/checkpointctl")


@pytest.fixture(scope="module")
def cri() -> Iterator[Cri]:
    with running_cri() as runtime:
        yield runtime


_get = json_when_up


@pytest.fixture(scope="module")
def checkpoint(cri: Cri, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A counter pod checkpointed through CRI after two requests: its archive, port and boot token."""
    base = f"{cri.registry}/warmstart-counter:1"
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", COUNTER_IMAGE, base], check=True,
                   capture_output=True)
    cri.crictl("pull", base)
    port = free_port()
    ctr = cri.run_pod("counter", base, port=port)
    _get(port, "/healthz")
    state = _get(port)
    archive = tmp_path_factory.mktemp("kube") / "checkpoint-counter.tar"
    cri.crictl("checkpoint", f"--export={archive}", ctr)
    cri.remove_pods()
    return {"archive": archive, "port": port, "token": state["boot_token"], "count": state["count"], "base": base}


def test_a_cri_checkpoint_goes_through_our_image_and_restores_through_cri_with_its_state(
        cri: Cri, checkpoint: dict, cli: Cli, tmp_path: Path) -> None:
    imported = cli("cache", "import", str(checkpoint["archive"]), "--as", "kube-counter:v1", "--json")
    assert imported.returncode == 0, imported.stderr
    info = imported.json
    assert info["container"] == "counter" and info["image"] == checkpoint["base"]
    assert any(b.startswith("/etc/hosts <- /") for b in info["bind_mounts"])  # recorded with the old node's path
    contents = cli("cache", "inspect", "kube-counter:v1", "--contents", "--json").json["contents"]
    (app,) = contents["processes"]  # CRIU's decoder reads Kubernetes' dump like ours: the app, its listening port
    assert app["command"][:2] == ["python3", "-u"] and checkpoint["port"] in contents["listening"]

    image = f"{cri.registry}/kube-counter-checkpoint:v1"
    exported = cli("cache", "export", "kube-counter:v1", "--checkpoint-image", image, "--push",
                   "-o", str(tmp_path / "image.oci.tar"), "--json")
    assert exported.returncode == 0, exported.stderr
    assert exported.json["pushed"] and exported.json["digest"].startswith("sha256:")

    cri.crictl("pull", image)
    cri.run_pod("restored", image, port=checkpoint["port"])
    after = _get(checkpoint["port"])
    assert after["boot_token"] == checkpoint["token"], "a restore keeps the boot token; a cold start makes a new one"
    assert after["count"] == checkpoint["count"] + 1
    status = json.loads(cri.crictl("inspect", cri.crictl("ps", "-q", "--name", "counter").split()[0]))
    assert status["status"]["annotations"].get("restored") == "true"
    cri.remove_pods()

    # The image's one layer is a checkpoint archive checkpointctl reads; no host path of the old node is in it.
    layer = _only_layer(tmp_path / "image.oci.tar", tmp_path / "layer.tar")
    shown = subprocess.run([str(CHECKPOINTCTL), "show", str(layer)], capture_output=True, text=True)
    assert shown.returncode == 0 and "counter" in shown.stdout and checkpoint["base"] in shown.stdout, shown.stderr
    with tarfile.open(layer) as tar:
        spec = json.load(tar.extractfile("spec.dump"))  # type: ignore[arg-type]
    assert {m["destination"] for m in spec["mounts"] if m["type"] == "bind"} >= {"/etc/hosts", "/etc/resolv.conf"}
    assert all(m["source"] == "" for m in spec["mounts"] if m["type"] == "bind")


def test_podman_loads_the_same_image_as_a_checkpoint(checkpoint: dict, cli: Cli) -> None:
    assert cli("cache", "import", str(checkpoint["archive"]), "--as", "kube-counter:v1").returncode == 0
    image = "localhost/warmstart-test-kube-checkpoint:v1"
    try:
        res = cli("cache", "export", "kube-counter:v1", "--checkpoint-image", image)
        assert res.returncode == 0, res.stderr
        annotations = json.loads(subprocess.run(["podman", "image", "inspect", "--format", "{{json .Annotations}}",
                                                 image], capture_output=True, text=True, check=True).stdout)
        names = {annotations[key] for key in ("org.criu.checkpoint.container.name",  # containerd
                                              "io.kubernetes.cri-o.annotations.checkpoint.name",  # CRI-O
                                              "io.podman.annotations.checkpoint.name")}  # podman
        assert len(names) == 1 and names.pop().startswith("counter_"), annotations
        assert annotations["io.podman.annotations.checkpoint.runtime.name"] == "runc"  # podman's IsCheckpointImage
    finally:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True)


def test_a_tampered_snapshot_is_never_exported_and_a_foreign_archive_never_imported(
        checkpoint: dict, cli: Cli, tmp_path: Path) -> None:
    assert cli("cache", "import", str(checkpoint["archive"]), "--as", "kube-counter:v1").returncode == 0
    pages = next((cli.cache / "snapshots" / "kube-counter" / "v1" / "images").glob("pages-*.img"))
    data = bytearray(pages.read_bytes())
    data[100:108] = b"tampered"
    pages.write_bytes(bytes(data))
    res = cli("cache", "export", "kube-counter:v1", "--checkpoint-image", "localhost/never-made:v1")
    assert res.returncode == 1 and "pages-" in res.error and len(res.stderr.strip().splitlines()[-1]) < 400, res.stderr
    assert subprocess.run(["podman", "image", "exists", "localhost/never-made:v1"]).returncode == 1

    foreign = tmp_path / "foreign.tar"  # the real archive with a link added: refused whole, nothing kept
    with tarfile.open(checkpoint["archive"]) as src, tarfile.open(foreign, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        link = tarfile.TarInfo("checkpoint/evil.img")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        dst.addfile(link)
    res = cli("cache", "import", str(foreign), "--as", "kube-foreign:v1")
    assert res.returncode == 2 and "is a link" in res.error, res.stderr
    assert not (cli.cache / "snapshots" / "kube-foreign").exists()
    assert not any((cli.cache / ".staging").iterdir())


def test_the_kubernetes_manifests_validate_against_the_api_types_and_ask_for_no_privilege(tmp_path: Path) -> None:
    files = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
    res = subprocess.run([str(CRI_DIR / "bin" / "validate"), *map(str, files)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(files) == 2 and res.stdout.count("valid") == 2
    text = "\n".join(re.sub(r"#.*", "", f.read_text()) for f in files)  # without the comments
    assert "privileged: true" not in text and "readinessProbe" in text
    from warmstart.core.sandbox import CAP_ADD

    added = set(re.findall(r"add: \[([^\]]*)\]", text)[0].replace(" ", "").split(","))
    assert added == set(CAP_ADD)  # the manifest asks for exactly what the sandbox needs
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "deploy" / "kubernetes" / "entrypoint.yaml").read_text().replace(
        "readinessProbe:", "readinesProbe:"))
    res = subprocess.run([str(CRI_DIR / "bin" / "validate"), str(broken)], capture_output=True, text=True)
    assert res.returncode == 1 and 'unknown field "readinesProbe"' in res.stderr, res.stderr


def _only_layer(oci_archive: Path, dest: Path) -> Path:
    with tarfile.open(oci_archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        (layer,) = manifest["layers"]
        dest.write_bytes(tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1]).read())  # type: ignore
    return dest
