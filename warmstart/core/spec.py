"""The description of an app (what to start and how to tell it is ready), and parsing of user input into it.

Flag parsing lives here and spec-file parsing in specfile.py; both produce the same frozen AppSpec.
"""

from __future__ import annotations

import re
import shlex
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from warmstart.core.layout import APP_NAME_RE
from warmstart.errors import UsageError

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
PROTOCOLS = ("tcp", "udp")


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a POSIX environment variable name

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
    """Readiness. http: GET `path` on container `port` answering a status in `status` (and matching `body`);
    tcp: connect to `port`; exec: `command` exits 0 inside the container; log: `pattern` appears in the logs.
    Ready after `successes` passes in a row."""

    kind: Literal["http", "tcp", "exec", "log"]
    port: int = 0
    path: str = "/"
    status: tuple[int, int] = (200, 299)
    body: str | None = None
    command: tuple[str, ...] = ()
    pattern: str | None = None
    timeout: float = 60.0
    interval: float = 0.05
    successes: int = 1

    def describe(self) -> str:
        lo, hi = self.status
        if self.kind == "http":
            body = f" with body matching {self.body!r}" if self.body else ""
            return f"HTTP GET {self.path} on container port {self.port} answering {lo}-{hi}{body}"
        if self.kind == "tcp":
            return f"TCP connect to container port {self.port}"
        if self.kind == "exec":
            return f"exec {shlex.join(self.command)} exiting 0"
        return f"log line matching {self.pattern!r}"


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request to the app (warm-up traffic or a hook); port 0 means the app's probe/first port."""

    method: str = "GET"
    path: str = "/"
    body: str | None = None
    port: int = 0


@dataclass(frozen=True)
class WarmupSpec:
    """Traffic before the snapshot: `requests` repeated `repeat` times (or for `duration` s), then `command`."""

    requests: tuple[HttpCall, ...] = ()
    repeat: int = 1
    duration: float | None = None
    command: tuple[str, ...] = ()
    timeout: float = 300.0


@dataclass(frozen=True)
class HookSpec:
    """A before_checkpoint or after_restore action: an exec in the container, a signal, or an HTTP call."""

    kind: Literal["exec", "signal", "http"]
    command: tuple[str, ...] = ()
    signal: str = ""
    call: HttpCall | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        if self.kind == "exec":
            return f"exec {shlex.join(self.command)}"
        if self.kind == "signal":
            return f"signal {self.signal}"
        assert self.call is not None
        return f"HTTP {self.call.method} {self.call.path}"


@dataclass(frozen=True)
class TrimSpec:
    """Shrink memory before the checkpoint: a full GC in every JVM (jcmd), gc + malloc_trim via the Python helper."""

    jvm: bool = False
    python: bool = False


@dataclass(frozen=True)
class AppSpec:
    """Everything needed to start the app cold and to snapshot it; stored so `run` can always fall back."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    volumes: tuple[str, ...] = ()
    probe: ProbeSpec | None = None
    warmup: WarmupSpec | None = None
    before_checkpoint: tuple[HookSpec, ...] = ()
    after_restore: tuple[HookSpec, ...] = ()
    trim: TrimSpec = TrimSpec()
    python_helper: bool = False
    build_context: str | None = None  # a directory with a Containerfile: `image` is built from it first
    containerfile: str = "Containerfile"
    secret_env: tuple[str, ...] = ()  # env names whose values never reach snapshots, stored files or argv
    secrets_during_warmup: bool = False  # the build gets the secrets too: the snapshot must then be encrypted
    always_restore: bool = False  # restore even where the build's trial restore did not beat its cold start
    lazy_pages: bool = True  # restore memory on demand where the host can (lazypages.py); false: copy it all first
    jvm_helper: bool | None = None  # the jdk.crac agent (jvmhelper.py); None: on for sandbox builds running java
    uniqueness: str | None = None  # GET path whose answer must differ between two clones (build's uniqueness gate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AppSpec:
        spec: AppSpec = _build(cls, raw)
        return spec


def _build(cls: Any, raw: Any) -> Any:
    """Rebuild a (nested) spec dataclass from its asdict() form: lists become tuples, dicts nested specs."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        kwargs[f.name] = _convert(hints[f.name], raw[f.name])
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if is_dataclass(hint):
        return _build(hint, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(value)
    if origin is dict:
        return dict(value)
    return value


def parse_duration(value: object) -> float | None:
    """Seconds from 30, 2.5, "30s", "500ms", "2m", "1h", "7d"; None when not a duration."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (m := _DURATION_RE.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def parse_size(text: str, *, unit_required: bool = False) -> int:
    """Bytes from "1048576", "500M", "2G", "1.5GiB" (binary multiples). On the command line (`unit_required`) a
    bare number is refused: "--max-size 500" is more likely a slip than 500 bytes."""
    m = _SIZE_RE.match(text)
    if not m or (unit_required and not re.search(r"[a-zA-Z]\s*$", text)):
        raise UsageError(f"invalid size {text!r}: expected a number with a unit, e.g. 500M, 2G" if unit_required
                         else f"invalid size {text!r}: expected a number of bytes or e.g. 500M, 2G")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index((m.group(2) or "_").upper()))


def validate_seconds(value: float, flag: str, *, zero_ok: bool = False) -> float:
    """A duration flag (`--ready-timeout`, `--idle`, ...): finite, in range (bounded.seconds), else UsageError."""
    from warmstart.core.bounded import seconds

    try:
        return seconds(value, f"invalid {flag}", zero_ok=zero_ok)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def validate_volume(text: str) -> str:
    """HOST_PATH:CONTAINER_PATH[:OPTIONS], both absolute (a bind mount, as `-v` means for docker and podman)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0].startswith("/") or not parts[1].startswith("/") or "\n" in text:
        raise UsageError(f"invalid volume {quoted(text)}: expected HOST_PATH:CONTAINER_PATH[:OPTIONS], both absolute")
    if parts[1].startswith("/.warmstart") or parts[1].startswith("/opt/warmstart"):
        raise UsageError(f"invalid volume {quoted(text)}: {parts[1]} is where warmstart mounts its own tools")
    return text


def missing_host_paths(volumes: tuple[str, ...]) -> None:
    """Refuse, before anything starts, a bind mount whose host path does not exist: podman fails the container
    (which a restore would count against the snapshot) and docker silently creates an empty root-owned dir."""
    import os

    for volume in volumes:
        host = volume.split(":", 1)[0]
        if not os.path.exists(host):
            raise UsageError(f"volume {quoted(volume)}: the host path {quoted(host)} does not exist",
                             hint="create it first (bind mounts are not created for you)")


def quoted(text: str, limit: int = 80) -> str:
    """User input echoed in an error: quoted, and cut to `limit` characters so the error stays one line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def validate_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise UsageError(f"invalid tag {quoted(tag)}: use letters, digits, '_', '.' or '-' (up to 128)")
    return tag


def validate_app_name(name: str) -> str:
    if not APP_NAME_RE.match(name):
        raise UsageError(
            f"invalid app name {quoted(name)}: use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
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
        raise UsageError(f"invalid port mapping {text!r}: expected HOST_PORT:CONTAINER_PORT or "
                         "IP:HOST_PORT:CONTAINER_PORT")
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
        if not sep or not ENV_NAME_RE.match(key):
            raise UsageError(f"invalid environment variable {item!r}: expected NAME=VALUE")
        env[key] = value
    return env


def make_probe(
    *, ready_http: str | None, ready_tcp: int | None, ports: list[int], ready_port: int | None, timeout: float
) -> ProbeSpec | None:
    """One probe from the flags; the port defaults to the only published port."""
    if ready_http and ready_tcp:
        raise UsageError("give either --ready-http or --ready-tcp, not both")
    validate_seconds(timeout, "--ready-timeout")
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
