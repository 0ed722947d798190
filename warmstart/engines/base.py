"""The contract every container engine implements. Keyword-only methods: call sites read like the CLI they mirror."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.core.sandbox import RunExtras
from warmstart.core.spec import PortBinding


@dataclass(frozen=True)
class Limits:
    """Resource limits of a container (`run --memory/--cpus`, as docker's flags)."""

    memory_bytes: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class ContainerState:
    """What warmstart needs to know about one container."""

    id: str
    name: str
    status: str  # engine's word: created, running, exited, ...
    running: bool
    exit_code: int
    restored: bool
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # "8080/tcp" -> (host_ip, host_port)
    image: str = ""
    created: str = ""
    upper_dir: str = ""  # the host path of its writable layer (overlay's upper dir), when the engine says
    pid: int = 0  # the host PID of its main process (0 when it does not run)
    ip: str = ""  # its address on the engine's network, and its MAC ("" when it has none or several)
    mac: str = ""

    def host_address(self, container_port: int, protocol: str = "tcp") -> tuple[str, int] | None:
        found = self.ports.get(f"{container_port}/{protocol}")
        if not found:
            return None
        ip, port = found
        return ("127.0.0.1" if ip in ("", "0.0.0.0") else ip), port


def criu_log_excerpt(path: Path, *, lines: int = 12) -> str:
    """The lines of a CRIU log that explain a failure: its error lines, else its tail."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # "rlimit: Can't setup RLIMIT_NOFILE" is logged as an error on every run in our sandbox and is harmless.
    errors = [ln for ln in text if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    picked = errors[-lines:] if errors else text[-lines:]
    return "\n".join(f"{path.name}: {ln.strip()}" for ln in picked)


def upper_dir(raw: dict) -> str:  # type: ignore[type-arg]
    """An inspect's GraphDriver.Data.UpperDir for overlay storage (same shape in podman and docker), or ""."""
    driver = raw.get("GraphDriver") or {}
    if driver.get("Name") not in ("overlay", "overlay2"):
        return ""
    path = (driver.get("Data") or {}).get("UpperDir") or ""
    return path if isinstance(path, str) and path.startswith("/") else ""


def published_ports(raw: dict) -> dict[str, tuple[str, int]]:  # type: ignore[type-arg]
    """"8080/tcp" -> (host_ip, host_port) from an inspect's NetworkSettings.Ports (same shape in podman and docker)."""
    ports: dict[str, tuple[str, int]] = {}
    for key, bindings in (raw.get("NetworkSettings", {}).get("Ports") or {}).items():
        if bindings:
            ports[key] = (bindings[0].get("HostIp", ""), int(bindings[0].get("HostPort", 0)))
    return ports


@dataclass(frozen=True)
class ImageConfig:
    """What an image runs when nothing overrides it: ENTRYPOINT + CMD, and its USER ("" = root)."""

    command: tuple[str, ...]
    user: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved as far as the engine allows


@dataclass(frozen=True)
class EngineInfo:
    """Versions and settings `doctor` and manifests record."""

    name: str
    version: str
    runtime: str
    runtime_version: str


class Engine(abc.ABC):
    """A container engine able to checkpoint a running container to a file and restore new containers from it."""

    name: str

    @abc.abstractmethod
    def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    def image_id(self, *, image: str) -> str:
        """The local image's ID; raises ImageNotFound."""

    @abc.abstractmethod
    def image_config(self, *, image: str) -> ImageConfig:
        """The local image's command and user; raises ImageNotFound."""

    @abc.abstractmethod
    def run(
        self,
        *,
        name: str,
        image: str,
        command: list[str],
        env: dict[str, str],
        ports: list[PortBinding],
        labels: dict[str, str],
        volumes: tuple[str, ...] = (),
        log_max_bytes: int | None = None,
        extras: RunExtras | None = None,
        limits: Limits | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> str:
        """Create and start a detached container; returns its ID. `log_max_bytes` caps the container's log file
        (build containers: the log is part of the checkpoint, and a chatty app's would be stored and restored);
        `extras` makes it a sandbox (our init as entrypoint, root, the privileges CRIU needs). `secrets` (sandbox
        containers only) go to our init by a channel the engine does not record, unlike `env`: the init reads
        NAME=VALUE pairs, each ended by a NUL byte, from the fd in SECRETS_FD_VAR (sandbox-init/secrets.go)."""

    @abc.abstractmethod
    def inspect(self, *, container: str) -> ContainerState | None:
        """The container's state, or None when it does not exist."""

    @abc.abstractmethod
    def logs(self, *, container: str, tail: int = 20) -> str: ...

    @abc.abstractmethod
    def exec(self, *, container: str, command: tuple[str, ...] | list[str], timeout: float,
             env: Mapping[str, str] | None = None) -> ExecResult:
        """Run a command inside the running container; raises EngineError when it cannot be run at all. `env`
        adds to the container's environment for this command only (never on a command line)."""

    @abc.abstractmethod
    def kill(self, *, container: str, signal: str) -> None:
        """Send a signal to the container's main process."""

    @abc.abstractmethod
    def build_image(self, *, context: Path, containerfile: str, tag: str, labels: dict[str, str]) -> str:
        """Build an image from a directory with a Containerfile; returns the image ID."""

    @abc.abstractmethod
    def load_image(self, *, archive: Path) -> str:
        """Load an image archive (OCI or docker layout) into local storage; the name it was loaded as."""

    @abc.abstractmethod
    def checkpoint(self, *, container: str, dest: Path, leave_running: bool = False) -> None:
        """Checkpoint the running container into the archive `dest` (uncompressed); the container stops
        unless `leave_running`."""

    @abc.abstractmethod
    def restore(self, *, archive: Path, name: str, ports: list[PortBinding]) -> str:
        """Start a NEW container `name` from the archive with its ports remapped; returns its ID."""

    @abc.abstractmethod
    def stop(self, *, container: str, timeout: float) -> None:
        """SIGTERM the container's main process, SIGKILL it after `timeout` seconds; no error when it is gone."""

    @abc.abstractmethod
    def stream_logs(self, *, container: str, follow: bool) -> None:
        """Copy the container's log to our stdout/stderr (until it stops, with `follow`)."""

    @abc.abstractmethod
    def copy_from(self, *, container: str, src: str, dest: Path) -> None:
        """Copy the directory `src` of a (running) container into the new directory `dest` (`podman cp`)."""

    @abc.abstractmethod
    def remove(self, *, container: str) -> None:
        """Remove the container at once (no stop grace period); no error when it does not exist."""

    @abc.abstractmethod
    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        """Containers carrying all the given labels, running or not."""
