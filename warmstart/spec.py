"""The description of an app (what to start and how to tell it is ready), and parsing of user input into it.

Parsing lives here so every entry point (flags today, a spec file later) rejects bad input with the same
precise one-line messages.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from warmstart.errors import UsageError

APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortBinding:
    """A container port and where it is published on the host (host_port 0 = pick a free one)."""

    container_port: int
    protocol: str = "tcp"
    host_port: int = 0
    host_ip: str = "127.0.0.1"

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"

    def to_engine_arg(self) -> str:
        host = f"{self.host_port}" if self.host_port else ""
        return f"{self.host_ip}:{host}:{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class ProbeSpec:
    """Readiness: an HTTP GET answering 2xx on `path`, or a TCP connect, against `port` (a container port)."""

    kind: Literal["http", "tcp"]
    port: int
    path: str = "/"
    timeout: float = 60.0
    interval: float = 0.05

    def describe(self) -> str:
        if self.kind == "http":
            return f"HTTP GET {self.path} on container port {self.port} answering 2xx"
        return f"TCP connect to container port {self.port}"


@dataclass(frozen=True)
class AppSpec:
    """Everything needed to start the app cold; stored with each snapshot so `run` can always fall back."""

    name: str
    image: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    probe: ProbeSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AppSpec:
        probe = raw.get("probe")
        return cls(
            name=raw["name"],
            image=raw["image"],
            command=list(raw.get("command") or []),
            env=dict(raw.get("env") or {}),
            ports=[int(p) for p in raw.get("ports") or []],
            probe=ProbeSpec(**probe) if probe else None,
        )


def validate_app_name(name: str) -> str:
    if not APP_NAME_RE.match(name):
        raise UsageError(
            f"invalid app name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _port_number(text: str, what: str, original: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid port mapping {original!r}: {what} {text!r} is not a port number (1-65535)")
    return int(text)


def parse_container_port(text: str) -> int:
    """`build -p`: a container port, `8080` or `8080/tcp`."""
    port, _, proto = text.partition("/")
    if proto and proto != "tcp":
        raise UsageError(f"invalid port {text!r}: only tcp ports can be probed and published by build")
    return _port_number(port, "container port", text)


def parse_port_binding(text: str) -> PortBinding:
    """`run -p`: HOST:CONTAINER, IP:HOST:CONTAINER or IP::CONTAINER, with an optional /tcp or /udp suffix."""
    body, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOCOLS:
        raise UsageError(f"invalid port mapping {text!r}: protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) == 2:
        ip, host, container = "0.0.0.0", parts[0], parts[1]
    elif len(parts) == 3:
        ip, host, container = parts[0] or "0.0.0.0", parts[1], parts[2]
    else:
        raise UsageError(f"invalid port mapping {text!r}: expected HOST_PORT:CONTAINER_PORT or IP:HOST_PORT:CONTAINER_PORT")
    return PortBinding(
        container_port=_port_number(container, "container port", text),
        protocol=proto,
        host_port=_port_number(host, "host port", text) if host else 0,
        host_ip=ip,
    )


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"invalid environment variable {item!r}: expected NAME=VALUE")
        env[key] = value
    return env


def make_probe(
    *, ready_http: str | None, ready_tcp: int | None, ports: list[int], ready_port: int | None, timeout: float
) -> ProbeSpec | None:
    """One probe from the flags; the port defaults to the only published port."""
    if ready_http and ready_tcp:
        raise UsageError("give either --ready-http or --ready-tcp, not both")
    if timeout <= 0:
        raise UsageError(f"invalid --ready-timeout {timeout}: must be greater than 0 seconds")
    if ready_tcp is not None:
        if ready_tcp not in ports:
            raise UsageError(f"--ready-tcp {ready_tcp} is not one of the published ports {ports} (add -p {ready_tcp})")
        return ProbeSpec(kind="tcp", port=ready_tcp, timeout=timeout)
    if ready_http is None:
        return None
    if not ready_http.startswith("/"):
        raise UsageError(f"invalid --ready-http {ready_http!r}: expected a path starting with '/'")
    port = ready_port
    if port is None:
        if len(ports) != 1:
            raise UsageError("--ready-http needs --ready-port when the app does not publish exactly one port (-p)")
        port = ports[0]
    if port not in ports:
        raise UsageError(f"--ready-port {port} is not one of the published ports {ports}")
    return ProbeSpec(kind="http", port=port, path=ready_http, timeout=timeout)
