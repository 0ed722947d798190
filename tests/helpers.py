"""Helpers shared by the real-engine tests (one home; fixtures live in the conftest files)."""

from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import COUNTER_IMAGE, Cli

# The counter with BALLAST_MB of random memory and a HOT_MB buffer every GET / reads (images/examples/counter), as
# the lazy-restore tests, the size benchmarks and the migration benchmark build it.
BALLAST_SPEC = """[apps.{name}]
image = "{image}"
env = {{ BALLAST_MB = "{size}", HOT_MB = "{hot}"{extra_env} }}
ports = [8080]
always_restore = true
lazy_pages = {lazy}
ready = {{ http = "/healthz" }}
[apps.{name}.warmup]
requests = [{{ path = "/" }}]
repeat = {repeat}
"""


def ballast_spec(path: Path, name: str, *, size: int, hot: int = 16, lazy: bool = True, extra_env: str = "",
                 repeat: int = 5) -> Path:
    text = BALLAST_SPEC.format(name=name, image=COUNTER_IMAGE, size=size, hot=hot, lazy=str(lazy).lower(),
                               extra_env=extra_env, repeat=repeat)
    path.write_text(text)
    return path


def json_when_up(port: int, path: str = "/", timeout: float = 30) -> dict:
    """GET 127.0.0.1:PORT/PATH as JSON, retried until it answers (a service still starting) or `timeout`."""
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def http_json(address: str, path: str = "/") -> dict:
    host, _, port = address.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def build(cli: Cli, app: str, *extra: str) -> dict:
    res = cli("build", "--name", app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
              "-e", "STARTUP_DELAY=1", "--json", *extra)
    assert res.returncode == 0, res.stderr
    return res.json


def snapshot_holds_token(snapshot: Path, token: str) -> bool:
    """Whether the build's process had this boot token: sandbox snapshots hold the process's memory pages (the
    token is a str object in them); container-mode archives hold the container log it printed at boot."""
    if (snapshot / "images").is_dir():
        return any(token.encode() in p.read_bytes() for p in (snapshot / "images").glob("pages-*.img"))
    with tarfile.open(snapshot / "checkpoint.tar") as tar:
        log = tar.extractfile("ctr.log").read().decode()  # type: ignore[union-attr]
    return re.search(r"token=([0-9a-f]+)", log).group(1) == token  # type: ignore[union-attr]


def free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corrupt_image(snapshot: Path, image: str) -> str:
    """Overwrite a CRIU image's data with garbage of the same length (size stays the same): in place in a sandbox
    snapshot's images/, or as a member of a container-mode archive. Returns the manifest's name of what changed."""
    if (snapshot / "images").is_dir():
        path, offset, size = snapshot / "images" / image, 0, (snapshot / "images" / image).stat().st_size
        name = f"images/{image}"
    else:
        path, name = snapshot / "checkpoint.tar", "checkpoint.tar"
        with tarfile.open(path) as tar:
            info = tar.getmember(f"checkpoint/{image}")
        offset, size = info.offset_data, info.size
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xde\xad\xbe\xef" * (size // 4))
    return name


def reseal(snapshot: Path) -> None:
    """Make the manifest vouch for the files as they are now: a snapshot intact on disk that CRIU cannot restore."""
    import hashlib

    manifest = json.loads((snapshot / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (snapshot / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


@dataclass
class RegistryServer:
    address: str
    storage: Path
    user: str = "warmstart"
    password: str = "correct horse"


def login(registry: RegistryServer, authfile: Path, password: str | None = None) -> None:
    subprocess.run(["podman", "login", "--tls-verify=false", "--authfile", str(authfile), "-u", registry.user,
                    "--password-stdin", registry.address], input=password or registry.password, text=True,
                   capture_output=True, check=True)




class JsonLines:
    """A process's JSON event lines on stdout (`serve --json`, `run --restart ... --json`), read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.taken: set[int] = set()  # indexes into seen that wait_for has returned
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        """The earliest event of this kind not yet returned (events of other kinds may arrive in between)."""
        for index, event in enumerate(self.seen):
            if event["event"] == kind and index not in self.taken:
                self.taken.add(index)
                return event
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(f"{self.proc.args[:3]} exited: {err}") from None
                continue
            self.seen.append(event)
            if event["event"] == kind:
                self.taken.add(len(self.seen) - 1)
                return event
        raise AssertionError(f"no {kind!r} event in {timeout}s; saw {self.seen}")
