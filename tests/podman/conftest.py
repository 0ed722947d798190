"""Fixtures of the real-engine tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

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


