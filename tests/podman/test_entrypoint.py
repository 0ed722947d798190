"""The container entrypoint wrapper: first boot cold + self-snapshot into a volume, later boots restore."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, json_when_up

pytestmark = pytest.mark.podman
IMAGE = "localhost/warmstart-example-selfsnap:latest"
# The smallest privilege set shown to work (docs/restore-paths.md, "Containers that snapshot themselves"): no
# --privileged.
PRIVS = ["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_TIME",
         "--security-opt", "seccomp=unconfined"]


def _image_ready() -> None:
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.skip(f"{IMAGE} missing: run images/build-images")


class Box:
    def __init__(self, snapdir: Path) -> None:
        self.snapdir = snapdir
        self.names: list[str] = []

    def start(self, *extra: str, entry: list[str] | None = None) -> tuple[str, int]:
        name = f"wse-{uuid.uuid4().hex[:8]}"
        port = free_port()
        args = ["podman", "run", "-d", "--name", name, *PRIVS, "--label", "io.warmstart.managed=true",
                "--label", "io.warmstart.app=entrypoint-test", "-v", f"{self.snapdir}:/snapshots",
                "-p", f"127.0.0.1:{port}:8080", *extra, IMAGE, *(entry or [])]
        subprocess.run(args, check=True, capture_output=True)
        self.names.append(name)
        return name, port

    def logs(self, name: str) -> str:
        p = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        return p.stdout + p.stderr

    def wait_log(self, name: str, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            logs = self.logs(name)
            if text in logs:
                return logs
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in logs of {name}:\n{self.logs(name)}")


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    _image_ready()
    b = Box(tmp_path / "snapshots")
    b.snapdir.mkdir()
    yield b
    if b.names:
        subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", *b.names], capture_output=True)


get = json_when_up  # the service in the container may still be booting or restoring


def test_first_boot_snapshots_itself_and_the_second_restores(box: Box) -> None:
    first, port1 = box.start("-e", "STARTUP_DELAY=1")
    box.wait_log(first, "snapshot snap-")
    body1 = get(port1)
    assert (box.snapdir / "current").is_symlink()
    second, port2 = box.start()
    logs = box.wait_log(second, "restored pid")
    body2 = get(port2)
    assert body2["boot_token"] == body1["boot_token"]  # the same process state, not a new boot
    assert body2["pid"] == body1["pid"] >= 300  # started at a reserved PID (burned up to it), restored at the same
    assert body2["count"] >= 2 and "starting cold" not in logs


def test_corrupt_or_foreign_snapshot_starts_cold_and_stays_healthy(box: Box) -> None:
    first, port1 = box.start()
    box.wait_log(first, "snapshot snap-")
    token = get(port1)["boot_token"]
    images = (box.snapdir / "current").resolve() / "images"
    pages = next(images.glob("pages-*.img"))
    pages.write_bytes(b"\0" * pages.stat().st_size)
    second, port2 = box.start()
    logs = box.wait_log(second, "starting cold")
    assert "is damaged" in logs
    assert get(port2)["boot_token"] != token
    box.wait_log(second, "snapshot snap-")  # and it replaced the damaged snapshot
    foreign, port3 = box.start("-e", "WARMSTART_IMAGE=something-else:2")
    assert "for another image or command" in box.wait_log(foreign, "starting cold")
    assert get(port3)["count"] >= 1


def test_pid_collision_is_detected_and_the_container_starts_cold(box: Box) -> None:
    first, _ = box.start()
    box.wait_log(first, "snapshot snap-")
    pid = json.loads(((box.snapdir / "current").resolve() / "manifest.json").read_text())["pids"][0]
    # Take the app's PID before the wrapper runs: a process parked at exactly that PID.
    occupy = (f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; sleep 1000 & "
              "exec python3 -m warmstart.entrypoint --snapshot-dir /snapshots --ready-http /healthz --port 8080 "
              "--no-snapshot -- python3 -u /app/app.py")
    # (writing ns_last_pid from the shell needs /proc/sys writable: unmask it for this container only)
    second, port = box.start("--security-opt", "unmask=ALL", "--entrypoint", "sh", entry=["-c", occupy])
    logs = box.wait_log(second, "starting cold")
    assert f"PID collision: PIDs [{pid}" in logs
    assert get(port)["count"] >= 1


@pytest.mark.parametrize("mode", ["cold", "restored"])
def test_sigterm_reaches_the_app_and_the_exit_code_is_the_apps(box: Box, mode: str) -> None:
    if mode == "restored":
        first, _ = box.start()
        box.wait_log(first, "snapshot snap-")
    name, port = box.start()
    box.wait_log(name, "restored pid" if mode == "restored" else "snapshot snap-")
    get(port)
    subprocess.run(["podman", "stop", "-t", "20", name], check=True, capture_output=True)
    code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name], capture_output=True,
                          text=True).stdout.strip()
    assert code == "143"  # the app died of SIGTERM (128 + 15), forwarded by the wrapper


def _holding(root: Path, value: str) -> list[str]:
    needles = (value.encode(), value.encode("utf-16-le"))
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_declared_secrets_stay_out_of_the_snapshot_and_reach_the_app_after_it(box: Box) -> None:
    """--secret-env / $WARMSTART_SECRET_NAMES: the app boots without the values, the snapshot holds none, and the
    app gets them after its restore point (helper) in the first container and in every restored one; an app that
    has a value anyway (copied under another name) is not published."""
    secret = f"sk-test-{uuid.uuid4().hex}"
    env = ["-e", f"API_KEY={secret}", "-e", "WARMSTART_SECRET_NAMES=API_KEY", "-e", "USE_HELPER=1",
           "-e", "WARMSTART_PYTHON_HELPER=1"]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    first, port1 = box.start(*env)
    box.wait_log(first, "snapshot snap-")
    assert get(port1, "/secret")["sha256"] == digest  # handed over once the snapshot was taken
    assert _holding(box.snapdir, secret) == []
    second, port2 = box.start(*env)
    box.wait_log(second, "restored pid")
    assert get(port2, "/secret")["sha256"] == digest
    assert get(port2)["boot_token"] == get(port1)["boot_token"]

    leaky = Box(box.snapdir.parent / "leaky")  # another snapshot volume, removed with the test's containers
    leaky.snapdir.mkdir()
    try:
        third, _ = leaky.start(*env, "-e", f"API_KEY_COPY={secret}")
        leaky.wait_log(third, "holds the value of secret API_KEY in clear")
        assert not (leaky.snapdir / "current").exists() and _holding(leaky.snapdir, secret) == []
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", *leaky.names], capture_output=True)
