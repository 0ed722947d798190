"""Fixtures of the real-engine tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import COUNTER_IMAGE
from tests.helpers import RegistryServer, free_port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1 with htpasswd auth; stopped afterwards."""
    if not shutil.which("docker-registry") or not shutil.which("htpasswd"):
        pytest.skip("docker-registry or htpasswd missing: run scripts/setup-host")
    root = tmp_path_factory.mktemp("registry")
    server = RegistryServer(address=f"127.0.0.1:{free_port()}", storage=root / "data")
    htpasswd = subprocess.run(["htpasswd", "-Bbn", server.user, server.password], capture_output=True, text=True,
                              check=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {server.storage}\n"
        f"http:\n  addr: {server.address}\nauth:\n  htpasswd:\n    realm: warmstart-tests\n"
        f"    path: {root / 'htpasswd'}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(tuple(server.address.split(":")), timeout=0.5).close()  # type: ignore[arg-type]
                break
            except OSError:
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def host_b(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second "host" on this machine: its own podman storage (graph root, run root, container database) and
    its own warmstart cache, with the counter image loaded; its containers and images are removed afterwards."""
    root = tmp_path / "hostb"
    root.mkdir()
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf), "WARMSTART_CACHE": str(root / "cache")}
    # The app's image is on host B as a build or a registry would have put it there (same image ID).
    subprocess.run(f"podman save {COUNTER_IMAGE} | env CONTAINERS_STORAGE_CONF={conf} podman load -q", shell=True,
                   check=True, capture_output=True)
    yield env
    b = {"CONTAINERS_STORAGE_CONF": str(conf), "PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["podman", "rm", "-af", "-t", "0"], env=b, capture_output=True)  # only host B's: its own storage
    subprocess.run(["podman", "rmi", "-af"], env=b, capture_output=True)  # (not `system reset`: it drops networks,
    # whose config dir both "hosts" share)
