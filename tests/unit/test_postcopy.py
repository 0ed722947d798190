"""Post-copy migration's pieces that take outside input or decide before anything stops (postcopy.py); the
migration itself runs against real engines in tests/podman/test_migrate.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cryptography import x509

from warmstart.errors import UsageError
from warmstart.migrate import postcopy as source
from warmstart.restore import postcopy as destination


def test_credentials_chain_to_a_ca_of_their_own_and_reach_the_destination_as_json() -> None:
    creds = source.credentials()
    ca = x509.load_pem_x509_certificate(creds.ca)
    for pem in (creds.server_cert, creds.client_cert):
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)  # raises if not signed by this migration's CA
    files = destination.destination_credentials(creds.for_destination())
    assert set(files) == {destination.CA_FILE, destination.CLIENT_CERT, destination.CLIENT_KEY}
    assert "PRIVATE KEY" in files[destination.CLIENT_KEY] and creds.server_key.decode() not in files.values()


@pytest.mark.parametrize("text", ["", "not json", "[]", json.dumps({"ca.pem": "x"}),
                                  json.dumps({"ca.pem": "-----BEGIN X", "client.pem": "-----BEGIN X",
                                              "client.key": 5}),
                                  json.dumps({"ca.pem": "-----BEGIN " + "x" * (70 << 10), "client.pem": "",
                                              "client.key": ""})])
def test_malformed_credentials_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="--post-copy-credentials: expected the JSON"):
        destination.destination_credentials(text)


def test_tls_volume_is_private_and_gone_afterwards() -> None:
    files = destination.destination_credentials(source.credentials().for_destination())
    with destination.tls_volume(files) as volume:
        host, mount, mode = volume.split(":")
        assert mount == destination.TLS_MOUNT and mode == "ro"
        assert Path(host).stat().st_mode & 0o777 == 0o700
        assert all((Path(host) / n).stat().st_mode & 0o777 == 0o600 for n in files)
    assert not Path(host).exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("127.0.0.1", "the destination must reach it"),
    ("0.0.0.0:80", "the destination must reach it"),
    ("hostb", "expected an IPv4 address"),
    ("10.0.0.1:0", "the port must be 1-65535"),
    ("10.0.0.1:http", "the port must be 1-65535"),
    ("203.0.113.7", "cannot listen there"),  # not an address of this host
])
def test_bad_page_server_endpoints_are_refused_before_anything_stops(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        source.endpoint(spec)


def test_the_default_endpoint_is_this_hosts_address_with_a_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))
        except OSError:
            pytest.skip("no default route here")
        address = s.getsockname()[0]
    chosen = source.endpoint(None)
    assert chosen.startswith(f"{address}:") and int(chosen.rsplit(":", 1)[1]) > 0


def test_the_page_server_ends_with_migrate_even_killed(tmp_path: Path) -> None:
    """A `migrate` killed with SIGKILL cannot clean up: the kernel ends the page server it started (PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "child"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from warmstart.migrate.postcopy import _end_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=_end_with_parent)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n")])
    try:
        for _ in range(500):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.01)
        child = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(500):
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break  # gone (reaped by init)
            if state == "Z":
                break  # dead, waiting for init to reap it
            time.sleep(0.01)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the child outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
