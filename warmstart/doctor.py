"""Use case `doctor`: is this host able to checkpoint and restore? One check per line, each failure with a fix."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from warmstart.cache.store import SnapshotStore
from warmstart.core.host import (
    CAP_SYS_RESOURCE,
    RLIMITS_SHIM,
    criu_has_rlimits_shim,
    criu_version,
    has_capability,
    version_tuple,
)
from warmstart.core.sandbox import CRIU_PREFIX, INIT
from warmstart.core.spec import AppSpec, ProbeSpec
from warmstart.engines import ResolvedEngine, resolve_engine
from warmstart.errors import WarmstartError
from warmstart.runtime.containers import remove_quietly

MIN_CRIU = (4, 2)  # older CRIU fails on Linux >= 6.16 (vDSO bounds, SO_PASSCRED on INET sockets)
SETUP_HINT = "run scripts/setup-host"


def containers_conf() -> list[Path]:
    """containers.conf files in the order podman reads them (looked up when asked, not at import)."""
    return [Path("/usr/share/containers/containers.conf"), Path("/etc/containers/containers.conf"),
            *sorted(Path("/etc/containers/containers.conf.d").glob("*.conf"))]
SMOKE_IMAGE = "localhost/warmstart-base-python:bookworm"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _criu() -> Check:
    path = shutil.which("criu")
    if not path:
        return Check("criu", False, "criu not found on PATH",
                     f"{SETUP_HINT} (installs CRIU 4.2+ as /usr/local/sbin/criu)")
    found = criu_version()
    if version_tuple(found) < MIN_CRIU:
        return Check("criu", False, f"{path} is version {found or 'unknown'}; this kernel needs 4.2 or newer",
                     f"{SETUP_HINT} (puts CRIU 4.2+ first on PATH)")
    try:
        proc = subprocess.run([path, "check"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("criu", False, f"`criu check` did not complete: {exc}", "run `criu check` for details")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("criu", False, f"`criu check` failed: {last}", "run `criu check` for details; CRIU needs root")
    return Check("criu", True, f"{path} {found}, `criu check` passes")


def _other_users() -> Check:
    """Whether CRIU can dump a process that runs as another user (most production images): it reads that
    process's rlimits with prlimit64, which needs CAP_SYS_RESOURCE, or warmstart's shim where root lacks it."""
    if has_capability(CAP_SYS_RESOURCE):
        return Check("users", True, "non-root processes can be dumped: root holds CAP_SYS_RESOURCE")
    path = shutil.which("criu")
    if path and criu_has_rlimits_shim(path):
        return Check("users", True, f"non-root processes can be dumped: root lacks CAP_SYS_RESOURCE, and {path} loads "
                     f"warmstart's rlimits shim ({RLIMITS_SHIM})")
    return Check("users", False, f"processes running as another user cannot be dumped: root lacks CAP_SYS_RESOURCE "
                 f"and {path or 'criu'} has no rlimits shim", f"{SETUP_HINT} (links {RLIMITS_SHIM} into its CRIU)")


def _configured_nofile() -> int | None:
    """The soft=hard nofile podman will give containers, from the containers.conf files (last one wins)."""
    found = None
    for path in containers_conf():
        try:
            conf = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for item in conf.get("containers", {}).get("default_ulimits", []):
            name, _, values = str(item).partition("=")
            if name == "nofile":
                found = max(int(v) for v in values.split(":") if v.strip().lstrip("-").isdigit())
    return found


def _docker_nofile() -> int | None:
    try:
        conf = json.loads(Path("/etc/docker/daemon.json").read_text())
        return int(conf["default-ulimits"]["nofile"]["Hard"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ulimits(engine: str) -> Check:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if engine == "docker":
        nofile = _docker_nofile()
        if nofile is None:
            nofile = hard + 1 if hard != resource.RLIM_INFINITY else 0  # dockerd passes its own (unlimited) limit
        fix = 'set "default-ulimits" in /etc/docker/daemon.json (scripts/docker-daemon start does)'
    else:
        nofile = _configured_nofile()
        if nofile is None:
            nofile = 1048576  # podman's built-in default
        fix = f'{SETUP_HINT} (sets default_ulimits = ["nofile=1024:1024", ...] in containers.conf.d)'
    if hard != resource.RLIM_INFINITY and nofile > hard:
        return Check("ulimits", False, f"containers get nofile={nofile}, above this host's hard limit {hard}: "
                     "starting containers fails with EPERM", fix)
    return Check("ulimits", True, f"containers get nofile={nofile} (host hard limit {hard})")


def _engine(resolved: ResolvedEngine | None, error: str) -> list[Check]:
    if resolved is None:
        return [Check("engine", False, error, SETUP_HINT)]
    try:
        info = resolved.engine.info()
    except WarmstartError as exc:
        return [Check("engine", False, f"{resolved.engine.name}: {exc}", SETUP_HINT)]
    checks = [Check("engine", True, f"{info.name} {info.version} (chosen by {resolved.source})")]
    experimental = getattr(resolved.engine, "experimental", None)
    if experimental is not None and not experimental():
        checks.append(Check("experimental", False, "docker's checkpoint API is off (experimental: false)",
                            'set "experimental": true in /etc/docker/daemon.json and restart dockerd '
                            "(scripts/docker-daemon start does)"))
    if info.runtime == "runc":
        checks.append(Check("runtime", True, f"runc {info.runtime_version} supports checkpoint/restore"))
    else:
        checks.append(Check("runtime", False, f"OCI runtime {info.runtime or 'unknown'}: checkpoint support not "
                            "assured (Debian 12's crun has none)",
                            f'set runtime = "runc" under [engine] in containers.conf ({SETUP_HINT} does)'))
    return checks


def _smoke(resolved: ResolvedEngine, image: str) -> Check:
    """A real build + restore of a tiny HTTP server (an INET socket: the case old CRIUs fail on)."""
    from warmstart.restore.launch import launch
    from warmstart.snapshot.build import build

    engine = resolved.engine
    with tempfile.TemporaryDirectory(prefix="warmstart-smoke-") as tmp:
        store = SnapshotStore(Path(tmp)).open()
        spec = AppSpec(name="doctor-smoke", image=image, command=("python3", "-m", "http.server", "8000"),
                       ports=(8000,), probe=ProbeSpec(kind="tcp", port=8000, timeout=30),
                       always_restore=True)  # the restore path is what is checked, whatever it gains
        try:
            built = build(spec, engine=engine, store=store)
            result = launch(spec.name, engine=engine, store=store, ports=[], no_fallback=True)
        except WarmstartError as exc:
            return Check("smoke", False, f"checkpoint/restore of {image} failed: {exc}",
                         "see the CRIU log lines with `warmstart build` of the same image")
        remove_quietly(engine, result.name)
    return Check("smoke", True, f"checkpointed ({built.size_bytes // 1024} KiB) and restored a {image} HTTP server "
                 f"in {result.ready_seconds:.2f}s")


def _restore_path(engine: str) -> Check:
    """Which path `run` takes for new snapshots, and why (not a failure when it is the container path)."""
    from warmstart.snapshot.build import default_mode  # the one rule build follows

    mode, why = default_mode()
    if mode == "sandbox":
        return Check("path", True, f"sandbox: new snapshots restore inside a fresh {engine} container, {INIT} as "
                     f"PID 1 running CRIU from {CRIU_PREFIX} (both bind-mounted read-only); {why}")
    return Check("path", True, f"container: new snapshots use {engine}'s whole-container checkpoint/restore ({why})",
                 f"{SETUP_HINT} builds {INIT} and the self-contained CRIU prefix the sandbox path needs")


def _lazy() -> Check:
    """Whether restores can be lazy here (not a failure when not: they are eager, as before)."""
    from warmstart.core.host import uffd_supported
    from warmstart.restore import lazypages

    if uffd_supported():
        return Check("lazy", True, f"lazy restore available (`criu check --feature uffd-noncoop` passes): snapshots "
                     f"with {lazypages.MIN_BYTES >> 20} MiB of memory or more restore their working set up front and "
                     "stream the rest")
    return Check("lazy", True, "lazy restore unavailable (`criu check --feature uffd-noncoop` fails): every restore "
                 "copies all memory first", "lazy restore needs userfaultfd with fork/remap/unmap events (Linux 4.11+)")


def _post_copy() -> Check:
    """Whether this host can serve a post-copy migration's pages (not a failure when not: stop-and-copy works)."""
    from warmstart.migrate import postcopy

    problem = postcopy.why_not_here()
    if problem:
        return Check("post-copy", True, f"post-copy migration unavailable: {problem}",
                     "`migrate` without --post-copy still works (stop-and-copy)")
    return Check("post-copy", True, "post-copy migration available: CRIU's page server can serve a checkpoint's "
                 "pages from here (`migrate --post-copy`; the destination also needs the lazy line above)")


# Where a CRI runtime restores checkpoint images (docs/kubernetes.md): containerd's CRI did from 2.0
# (containerd#10365) until 2.4 removed it (deprecated in 2.3, for KEP-5823's pod-level restore); CRI-O does when
# `[crio.checkpoint_restore] container_level_enabled = "checkpoint_restore"` (off by default since autumn 2026).
CONTAINERD_RESTORE = ((2, 0), (2, 4))
CRI_DIR = Path(os.environ.get("WARMSTART_CRI_DIR", "/opt/warmstart/cri"))


def _tool_version(path: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\b(\d+)\.(\d+)\.\d+", out)
    return (int(found[1]), int(found[2])) if found else None


def _kubernetes() -> Check:
    """Which Kubernetes paths this host's CRI runtimes offer (informational: the entrypoint mode needs none)."""
    paths = ["entrypoint mode: any runtime granting deploy/kubernetes/entrypoint.yaml's capabilities"]
    seen = set()
    for binary in (shutil.which("containerd"), str(CRI_DIR / "bin" / "containerd")):
        if not binary or binary in seen or not os.access(binary, os.X_OK):
            continue
        seen.add(binary)
        version = _tool_version(binary)
        if version is None:
            continue
        low, high = CONTAINERD_RESTORE
        verdict = "restores checkpoint images" if low <= version < high else \
            f"cannot restore checkpoint images (its CRI does in {low[0]}.{low[1]} to {high[0]}.{high[1] - 1})"
        paths.append(f"containerd {version[0]}.{version[1]} ({binary}) {verdict}")
    crio = shutil.which("crio")
    if crio:
        confs = [Path("/etc/crio/crio.conf"), *sorted(Path("/etc/crio/crio.conf.d").glob("*.conf"))]
        text = "".join(p.read_text(errors="replace") for p in confs if p.is_file())
        on = re.search(r'container_level_enabled\s*=\s*"checkpoint_restore"', text) is not None
        paths.append(f"CRI-O ({crio}) " + ("restores checkpoint images" if on else
                                           "does not restore checkpoint images (deploy/kubernetes/"
                                           "crio-checkpoint-restore.conf turns it on)"))
    if len(paths) == 1:
        paths.append("no CRI runtime found here for checkpoint images")
    return Check("kubernetes", True, "; ".join(paths))


def run_checks(*, engine_choice: str | None, cache_dir: Path, smoke: bool = False,
               smoke_image: str = SMOKE_IMAGE) -> list[Check]:
    checks = [Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run as root: checkpointing needs it")]
    try:
        resolved, error = resolve_engine(engine_choice), ""
    except WarmstartError as exc:
        resolved, error = None, str(exc)
    checks += _engine(resolved, error)
    checks.append(_criu())
    checks.append(_other_users())
    checks.append(_ulimits(resolved.engine.name if resolved else "podman"))
    checks.append(_restore_path(resolved.engine.name if resolved else "podman"))
    checks.append(_lazy())
    checks.append(_post_copy())
    checks.append(_kubernetes())
    try:
        SnapshotStore(cache_dir).open()
        checks.append(Check("cache", True, f"{cache_dir} is writable"))
    except WarmstartError as exc:
        checks.append(Check("cache", False, str(exc), "pass --cache-dir or set $WARMSTART_CACHE"))
    if smoke:
        if resolved is not None and all(c.ok for c in checks):
            checks.append(_smoke(resolved, smoke_image))
        else:
            checks.append(Check("smoke", False, "skipped: fix the failures above first"))
    return checks


