"""Shared fixtures. Real-engine tests run the installed `warmstart` command as a user would and remove
everything they create; a session label lets the next run sweep what a killed run left behind."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SESSION_PREFIX = "pytest-"
SESSION = f"{SESSION_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"  # the pid: only dead runs' leftovers are swept
WARMSTART = str(Path(sys.executable).with_name("warmstart"))
COUNTER_IMAGE = "localhost/warmstart-example-counter:latest"
BASE_IMAGE = "localhost/warmstart-base-python:bookworm"


@functools.cache
def _podman_ready() -> str | None:
    """None when real-engine tests can run, else the reason they cannot."""
    if os.geteuid() != 0:
        return "checkpointing needs root"
    if not shutil.which("podman") or not shutil.which("criu"):
        return "podman or criu missing: run scripts/setup-host"
    if subprocess.run(["podman", "image", "exists", COUNTER_IMAGE]).returncode != 0:
        return f"{COUNTER_IMAGE} missing: run images/build-images"
    return None


DOCKER = "/usr/bin/docker"  # Debian's client, matching the daemon scripts/docker-daemon starts


@functools.cache
def _docker_ready() -> str | None:
    """None when docker-engine tests can run, else the reason they cannot."""
    if not os.path.exists(DOCKER):
        return "docker not installed: run scripts/setup-host"
    if not os.path.exists("/var/run/docker.sock"):
        return "no docker daemon: scripts/test starts one (scripts/docker-daemon start)"
    probe = subprocess.run([DOCKER, "image", "inspect", COUNTER_IMAGE], capture_output=True)
    if probe.returncode != 0:
        return f"{COUNTER_IMAGE} not in docker: run images/build-images --docker"
    return None


_REAL_ENGINES_COLLECTED = False  # set at collection: the fast layer never asks an engine anything


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _REAL_ENGINES_COLLECTED
    for item in items:
        if "podman" not in item.keywords and "docker" not in item.keywords:
            continue
        _REAL_ENGINES_COLLECTED = True
        reason = _podman_ready() or ("docker" in item.keywords and _docker_ready())
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _engines() -> list[list[str]]:
    return [["podman"]] + ([[DOCKER]] if _docker_ready() is None else [])


def _force_remove(cmd: list[str], ids: list[str]) -> None:
    # podman waits out a 10 s stop timeout for apps that ignore SIGTERM unless told not to; docker rm -f kills.
    grace = ["--ignore", "-t", "0"] if cmd == ["podman"] else []
    subprocess.run([*cmd, "rm", "-f", *grace, *ids], capture_output=True)


def _session_dead(label: str) -> bool:
    """A test session label of a run whose pytest process is gone (a concurrent run's containers are not ours)."""
    pid = label.removeprefix(SESSION_PREFIX).split("-")[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_ours(session: str | None) -> None:
    """Remove containers carrying our test-session label (this run's, or those of dead runs when None)."""
    for cmd in _engines():
        proc = subprocess.run(
            [*cmd, "ps", "-a", "--filter", "label=io.warmstart.managed=true",
             "--format", '{{.ID}} {{index .Labels "io.warmstart.session"}}'],
            capture_output=True, text=True,
        )
        ids = []
        for line in proc.stdout.splitlines():
            cid, _, label = line.partition(" ")
            if (session is None and label.startswith(SESSION_PREFIX) and _session_dead(label)) or \
                    (session and label == session):
                ids.append(cid)
        if ids:
            _force_remove(cmd, ids)


@pytest.fixture(scope="session", autouse=True)
def _session_label() -> Iterator[None]:
    os.environ["WARMSTART_SESSION"] = SESSION
    podman = _REAL_ENGINES_COLLECTED and _podman_ready() is None
    if podman:
        _remove_ours(None)  # leftovers of killed earlier runs
    yield
    if podman:
        _remove_ours(SESSION)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def error(self) -> str:
        """The one error line (progress lines may come before it on stderr)."""
        return next((ln for ln in self.stderr.splitlines() if ln.startswith("warmstart: error: ")), "")


class Cli:
    """Runs the real `warmstart` command against a private cache dir."""

    def __init__(self, cache: Path, engine: str | None = None) -> None:
        self.cache = cache
        self.engine = engine

    def argv(self, *args: str) -> list[str]:
        return [WARMSTART, *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        engine = {"WARMSTART_ENGINE": self.engine} if self.engine else {}
        return {**os.environ, "WARMSTART_CACHE": str(self.cache), **engine, **(extra or {})}

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(env), timeout=timeout,
                              stdin=subprocess.DEVNULL)
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cli(cache: Path) -> Cli:
    return Cli(cache)


@pytest.fixture
def app_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def containers_of(app: str) -> list[str]:
    """Names of the app's containers in every engine."""
    names = []
    for cmd in _engines():
        names += subprocess.run(
            [*cmd, "ps", "-a", "--filter", f"label=io.warmstart.app={app}", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
    return names


@pytest.fixture
def owned_app(app_name: str) -> Iterator[str]:
    """An app name whose containers are all removed after the test (and asserted gone by tests that care)."""
    yield app_name
    for cmd in _engines():
        names = subprocess.run([*cmd, "ps", "-aq", "--filter", f"label=io.warmstart.app={app_name}"],
                               capture_output=True, text=True).stdout.split()
        if names:
            _force_remove(cmd, names)


ENGINES = ["podman", pytest.param("docker", marks=pytest.mark.docker)]
