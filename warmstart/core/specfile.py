"""`warmstart.toml`: one or more apps, validated with messages that name the file, the key path and what was
expected. Example:

    [apps.shop]
    image = "localhost/shop:1.4"          # or: build = "./shop" (a directory with a Containerfile)
    command = ["java", "-jar", "/app/shop.jar"]
    env = { JAVA_TOOL_OPTIONS = "-Xmx256m", DB_PASSWORD = "..." }
    secret_env = ["DB_PASSWORD"]
    ports = [8080]

    [apps.shop.ready]                      # exactly one of http / tcp / exec / log
    http = "/healthz"
    status = "200-299"
    timeout = "60s"

    [apps.shop.warmup]
    requests = ["GET /products", { method = "POST", path = "/cart", body = "{}" }]
    repeat = 200

    [[apps.shop.hooks.before_checkpoint]]
    http = "POST /admin/close-pools"

    [apps.shop.trim]
    jvm = true
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from warmstart.core import bounded
from warmstart.core.bounded import loads_toml
from warmstart.core.layout import APP_NAME_RE
from warmstart.core.safefs import read_regular
from warmstart.core.spec import (
    ENV_NAME_RE,
    AppSpec,
    HookSpec,
    HttpCall,
    ProbeSpec,
    TrimSpec,
    WarmupSpec,
    parse_duration,
)
from warmstart.errors import SpecError

DEFAULT_FILE = "warmstart.toml"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SIGNAL_RE = re.compile(r"^(SIG)?[A-Z0-9+-]+$")

MAX_BYTES = 1 << 20  # a spec file of a hundred apps is a few tens of KiB
APP_KEYS = {"image", "build", "containerfile", "command", "env", "secret_env", "ports", "volumes", "ready",
            "warmup", "hooks", "trim", "python_helper", "uniqueness",
            "secrets_during_warmup", "always_restore", "jvm_helper", "lazy_pages"}


class _Reader:
    """Typed accessors that raise SpecError naming file, key path and expectation."""

    def __init__(self, path: Path) -> None:
        self.file = path

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.file}: {key}: {message}")

    def table(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is out of range ({lo}-{hi})")
        return value

    def port(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a port number, got {_kind(value)}")
        if not 1 <= value <= 65535:
            raise self.fail(key, f"port {value} is out of range (1-65535)")
        return value

    def duration(self, value: Any, key: str) -> float:
        seconds = parse_duration(value)
        if seconds is None:
            raise self.fail(key, f"expected a duration like \"30s\", \"500ms\", \"2m\" or a number of seconds, "
                                 f"got {value!r}")
        try:
            return bounded.seconds(seconds, "duration")
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def command(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            try:
                parts = shlex.split(value)
            except ValueError as exc:
                raise self.fail(key, f"cannot split command: {exc}") from None
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts = list(value)
        else:
            raise self.fail(key, f"expected a command (a string or a list of strings), got {_kind(value)}")
        if not parts:
            raise self.fail(key, "command is empty")
        return tuple(parts)

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"expected a list of strings, got {_kind(value)}")
        return tuple(value)

    def regex(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            re.compile(text)
        except re.error as exc:
            raise self.fail(key, f"invalid regular expression: {exc}") from None
        return text

    def url_path(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not text.startswith("/"):
            raise self.fail(key, f"expected a path starting with '/', got {text!r}")
        return text


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
             dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, dict) else "a table"


def load(path: Path) -> dict[str, AppSpec]:
    """All apps of a spec file, in file order."""
    try:
        raw = loads_toml(read_regular(path, limit=MAX_BYTES))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    except ValueError as exc:  # too large, too deep, a NUL byte, nan or inf
        raise SpecError(f"{path}: refused: {exc}") from None
    r = _Reader(path)
    r.table(raw, "", {"apps"})
    apps = raw.get("apps", {})
    if not isinstance(apps, dict):
        raise r.fail("apps", f"expected a table of apps, got {_kind(apps)}")
    if not apps:
        raise r.fail("apps", "no apps defined (add an [apps.NAME] table)")
    return {name: _app(r, name, value) for name, value in apps.items()}


def _app(r: _Reader, name: str, raw: Any) -> AppSpec:
    key = f"apps.{name}"
    if not APP_NAME_RE.match(name):
        raise r.fail(key, "invalid app name: use 1-63 lowercase letters, digits, '.', '_' or '-'")
    t = r.table(raw, key, APP_KEYS)
    if "image" not in t and "build" not in t:
        raise r.fail(key, "needs `image` (a local image) or `build` (a directory with a Containerfile)")
    build_context = _build_context(r, key, t)
    image = r.string(t["image"], f"{key}.image") if "image" in t else f"localhost/warmstart-app-{name}:latest"
    env, secret_env = _env(r, key, t)
    if not isinstance(t.get("ports", []), list):
        raise r.fail(f"{key}.ports", f"expected a list of port numbers, got {_kind(t['ports'])}")
    ports = tuple(r.port(p, f"{key}.ports[{i}]") for i, p in enumerate(t.get("ports", [])))
    volumes = _volumes(r, key, t)
    probe = _probe(r, f"{key}.ready", t["ready"], ports) if "ready" in t else None
    default_port = probe.port if probe else 0  # HTTP calls go where the probe goes unless they say otherwise
    warmup = _warmup(r, f"{key}.warmup", t["warmup"], ports, default_port) if "warmup" in t else None
    hooks = r.table(t.get("hooks", {}), f"{key}.hooks", {"before_checkpoint", "after_restore"})
    trim_raw = r.table(t.get("trim", {}), f"{key}.trim", {"jvm", "python"})
    trim = TrimSpec(**{k: r.boolean(v, f"{key}.trim.{k}") for k, v in trim_raw.items()})
    helper = r.boolean(t.get("python_helper", False), f"{key}.python_helper")
    if trim.python and not helper:
        raise r.fail(f"{key}.trim.python", "needs python_helper = true (the trim runs inside the app through it)")
    return AppSpec(
        name=name,
        image=image,
        command=r.command(t["command"], f"{key}.command") if "command" in t else (),
        env=env,
        secret_env=secret_env,
        secrets_during_warmup=r.boolean(t.get("secrets_during_warmup", False), f"{key}.secrets_during_warmup"),
        always_restore=r.boolean(t.get("always_restore", False), f"{key}.always_restore"),
        lazy_pages=r.boolean(t.get("lazy_pages", True), f"{key}.lazy_pages"),
        jvm_helper=r.boolean(t["jvm_helper"], f"{key}.jvm_helper") if "jvm_helper" in t else None,
        ports=ports,
        volumes=volumes,
        probe=probe,
        warmup=warmup,
        before_checkpoint=_hooks(r, f"{key}.hooks.before_checkpoint", hooks.get("before_checkpoint", []), ports,
                                 default_port),
        after_restore=_hooks(r, f"{key}.hooks.after_restore", hooks.get("after_restore", []), ports,
                             default_port),
        trim=trim,
        python_helper=helper,
        build_context=build_context,
        containerfile=r.string(t.get("containerfile", "Containerfile"), f"{key}.containerfile"),
        uniqueness=r.url_path(t["uniqueness"], f"{key}.uniqueness") if "uniqueness" in t else None,
    )


def _build_context(r: _Reader, key: str, t: dict[str, Any]) -> str | None:
    """`build`: a directory relative to the spec file, made absolute."""
    if "build" not in t:
        return None
    context = (r.file.parent / r.string(t["build"], f"{key}.build")).resolve()
    if not context.is_dir():
        raise r.fail(f"{key}.build", f"{context} is not a directory")
    return str(context)


def _env(r: _Reader, key: str, t: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    """`env` (names and values) and `secret_env` (names only: values come from warmstart's own environment at
    build/run time, else from env)."""
    if not isinstance(t.get("env", {}), dict):
        raise r.fail(f"{key}.env", f"expected a table of NAME = \"value\", got {_kind(t['env'])}")
    env = {}
    for k, v in t.get("env", {}).items():
        if not ENV_NAME_RE.match(k):
            raise r.fail(f"{key}.env.{k}", "invalid environment variable name")
        if not isinstance(v, str):
            raise r.fail(f"{key}.env.{k}", f"expected a string, got {_kind(v)}")
        env[k] = v
    secret_env = r.strings(t.get("secret_env", []), f"{key}.secret_env")
    for s in secret_env:
        if not ENV_NAME_RE.match(s):
            raise r.fail(f"{key}.secret_env", f"{s!r} is not an environment variable name")
    return env, secret_env


def _volumes(r: _Reader, key: str, t: dict[str, Any]) -> tuple[str, ...]:
    volumes = r.strings(t.get("volumes", []), f"{key}.volumes")
    for i, v in enumerate(volumes):
        if len(v.split(":")) not in (2, 3) or not v.startswith("/"):
            raise r.fail(f"{key}.volumes[{i}]", f"expected HOST_PATH:CONTAINER_PATH[:OPTIONS], got {v!r}")
    return volumes


def _port_of(r: _Reader, key: str, t: dict[str, Any], ports: tuple[int, ...], default: int = 0) -> int:
    """The explicit port, else `default` (the probe's port), else the only port."""
    if "port" in t:
        port = r.port(t["port"], f"{key}.port")
    elif default:
        port = default
    elif len(ports) == 1:
        port = ports[0]
    else:
        raise r.fail(f"{key}.port", f"needed: the app publishes {len(ports)} ports {list(ports)}, say which")
    if port not in ports:
        raise r.fail(f"{key}.port", f"{port} is not one of the app's ports {list(ports)}")
    return port


def _probe(r: _Reader, key: str, raw: Any, ports: tuple[int, ...]) -> ProbeSpec:
    t = r.table(raw, key, {"http", "tcp", "exec", "log", "port", "status", "body", "timeout", "interval",
                           "successes"})
    kinds = [k for k in ("http", "tcp", "exec", "log") if k in t]
    if len(kinds) != 1:
        raise r.fail(key, f"expected exactly one of http, tcp, exec, log; got {kinds or 'none'}")
    kind = kinds[0]
    common: dict[str, Any] = {
        "timeout": r.duration(t.get("timeout", 60), f"{key}.timeout"),
        "interval": r.duration(t.get("interval", 0.05), f"{key}.interval"),
        "successes": r.integer(t.get("successes", 1), f"{key}.successes", 1, 1000),
    }
    for only_http in ("status", "body"):
        if only_http in t and kind != "http":
            raise r.fail(f"{key}.{only_http}", "only applies to http probes")
    if kind == "http":
        return ProbeSpec(kind="http", path=r.url_path(t["http"], f"{key}.http"),
                         port=_port_of(r, key, t, ports),
                         status=_status(r, f"{key}.status", t.get("status", "200-299")),
                         body=r.regex(t["body"], f"{key}.body") if "body" in t else None, **common)
    if kind == "tcp":
        port = r.port(t["tcp"], f"{key}.tcp")
        if port not in ports:
            raise r.fail(f"{key}.tcp", f"{port} is not one of the app's ports {list(ports)}")
        return ProbeSpec(kind="tcp", port=port, **common)
    if kind == "exec":
        return ProbeSpec(kind="exec", command=r.command(t["exec"], f"{key}.exec"), **common)
    return ProbeSpec(kind="log", pattern=r.regex(t["log"], f"{key}.log"), **common)


def _status(r: _Reader, key: str, value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (m := re.match(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$", value)):
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    else:
        raise r.fail(key, f"expected a status like 200 or a range like \"200-299\", got {value!r}")
    if not (100 <= lo <= hi <= 599):
        raise r.fail(key, f"status range {lo}-{hi} is not within 100-599")
    return lo, hi


def _call(r: _Reader, key: str, raw: Any, ports: tuple[int, ...], default_port: int) -> HttpCall:
    if isinstance(raw, str):
        parts = raw.split(None, 1)
        t: dict[str, Any] = {"method": parts[0], "path": parts[1]} if len(parts) == 2 else {"path": raw}
    else:
        t = r.table(raw, key, {"method", "path", "body", "port"})
    method = r.string(t.get("method", "GET"), f"{key}.method").upper()
    if method not in HTTP_METHODS:
        raise r.fail(f"{key}.method", f"expected one of {', '.join(HTTP_METHODS)}, got {method!r}")
    return HttpCall(method=method, path=r.url_path(t.get("path"), f"{key}.path"),
                    body=r.string(t["body"], f"{key}.body") if t.get("body") else None,
                    port=_port_of(r, key, t, ports, default_port))


def _warmup(r: _Reader, key: str, raw: Any, ports: tuple[int, ...], default_port: int) -> WarmupSpec:
    t = r.table(raw, key, {"requests", "repeat", "duration", "command", "timeout"})
    if "repeat" in t and "duration" in t:
        raise r.fail(key, "give repeat or duration, not both")
    if not isinstance(t.get("requests", []), list):
        raise r.fail(f"{key}.requests", f"expected a list of requests, got {_kind(t['requests'])}")
    requests = tuple(_call(r, f"{key}.requests[{i}]", c, ports, default_port)
                     for i, c in enumerate(t.get("requests", [])))
    command = r.command(t["command"], f"{key}.command") if "command" in t else ()
    if not requests and not command:
        raise r.fail(key, "needs requests or a command")
    return WarmupSpec(
        requests=requests,
        repeat=r.integer(t.get("repeat", 1), f"{key}.repeat", 1, 1_000_000),
        duration=r.duration(t["duration"], f"{key}.duration") if "duration" in t else None,
        command=command,
        timeout=r.duration(t.get("timeout", 300), f"{key}.timeout"),
    )


def _hooks(r: _Reader, key: str, raw: Any, ports: tuple[int, ...], default_port: int) -> tuple[HookSpec, ...]:
    if not isinstance(raw, list):
        raise r.fail(key, f"expected a list of hooks ([[{key}]] tables), got {_kind(raw)}")
    hooks = []
    for i, item in enumerate(raw):
        k = f"{key}[{i}]"
        t = r.table(item, k, {"exec", "signal", "http", "port", "body", "timeout"})
        kinds = [x for x in ("exec", "signal", "http") if x in t]
        if len(kinds) != 1:
            raise r.fail(k, f"expected exactly one of exec, signal, http; got {kinds or 'none'}")
        timeout = r.duration(t.get("timeout", 30), f"{k}.timeout")
        if kinds[0] == "exec":
            hooks.append(HookSpec(kind="exec", command=r.command(t["exec"], f"{k}.exec"), timeout=timeout))
        elif kinds[0] == "signal":
            sig = r.string(t["signal"], f"{k}.signal").upper()
            if not SIGNAL_RE.match(sig):
                raise r.fail(f"{k}.signal", f"expected a signal name like SIGUSR2, got {t['signal']!r}")
            hooks.append(HookSpec(kind="signal", signal=sig if sig.startswith("SIG") else f"SIG{sig}",
                                  timeout=timeout))
        else:
            call_raw = {"body": t["body"]} if "body" in t else {}
            parts = r.string(t["http"], f"{k}.http").split(None, 1)
            call_raw |= {"method": parts[0], "path": parts[1]} if len(parts) == 2 else {"path": parts[0]}
            if "port" in t:
                call_raw["port"] = t["port"]
            hooks.append(HookSpec(kind="http", call=_call(r, k, call_raw, ports, default_port), timeout=timeout))
    return tuple(hooks)
