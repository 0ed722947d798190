"""Podman, driven through its CLI with JSON output.

Why the CLI and not the REST API: the API needs `podman system service` running as a daemon, which nothing starts
on our hosts; the CLI is podman's primary, documented interface, and the one whose checkpoint/restore flags
(`--export`, `--import`, `--ignore-static-ip`, `-p` on restore) users already know. Every call is one `podman`
process with a timeout; errors are translated into warmstart's tree here and nowhere else.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from warmstart.core import sandbox
from warmstart.core.criu import DUMP_LOG, RESTORE_LOG
from warmstart.core.sandbox import RunExtras
from warmstart.core.signals import shielded
from warmstart.core.spec import PortBinding
from warmstart.engines import early
from warmstart.engines.base import (
    ContainerState,
    Engine,
    EngineInfo,
    ExecResult,
    ImageConfig,
    Limits,
    criu_log_excerpt,
    published_ports,
    upper_dir,
)
from warmstart.errors import (
    CheckpointError,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    RestoreError,
    UsageError,
)

DEFAULT_TIMEOUT = 120.0
MODE_LABEL = "io.warmstart.mode"  # labels.MODE: set on sandbox-restored instances, which podman sees as plain runs




class PodmanEngine(Engine):
    name = "podman"

    def __init__(self, binary: str = "podman") -> None:
        self.binary = binary

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _podman(
        self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True, pass_fds: tuple[int, ...] = (),
        fd3: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run podman; `fd3` (one of pass_fds) becomes podman's fd 3, which `--preserve-fds 1` hands on."""
        argv = [self.binary, *args]
        if fd3 is not None:  # subprocess keeps fd numbers; bash moves it (dash takes single-digit fds only)
            argv = ["/bin/bash", "-c", f'exec "$@" 3<&{fd3}', "bash", *argv]
        try:
            proc = run_to_completion(argv, timeout=timeout, pass_fds=pass_fds)
        except FileNotFoundError as exc:
            raise EngineUnavailable(
                f"podman not found on PATH ({self.binary})", hint="run scripts/setup-host or install podman"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"podman {args[0]} did not finish within {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise self._error(args, proc)
        return proc

    @staticmethod
    def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
        """podman's own one-line reason: its last `Error:` line on stderr."""
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("Error:")), lines[-1] if lines else "")
        return err.removeprefix("Error: ").strip() or f"exit status {proc.returncode}"

    def _error(self, args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> EngineError:
        err = self._error_line(proc)
        verb = " ".join(a for a in args[:2] if not a.startswith("-"))
        if "image not known" in err or "no such image" in err.lower():
            return ImageNotFound(f"image not found locally: {err}",
                                 hint="build or import it first (`podman images` lists local images)")
        return EngineError(f"podman {verb} failed: {err}")

    def _static_dir(self, container: str) -> Path | None:
        proc = self._podman("container", "inspect", "--format", "{{.StaticDir}}", container, check=False)
        return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None

    # -- interface --------------------------------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        raw = json.loads(self._podman("info", "--format", "json").stdout)
        runtime = raw.get("host", {}).get("ociRuntime", {})
        return EngineInfo(
            name="podman",
            version=raw.get("version", {}).get("Version", ""),
            runtime=runtime.get("name", ""),
            runtime_version=(runtime.get("version", "").splitlines() or [""])[0].split(" version ")[-1],
        )

    def image_id(self, *, image: str) -> str:
        proc = early.take_image_id(self.binary, image, timeout=DEFAULT_TIMEOUT) or \
            self._podman(*early.PODMAN_IMAGE_ID, image, check=False)
        if proc.returncode != 0:
            raise ImageNotFound(
                f"image {image!r} not found locally",
                hint="build or import it first (no registry is pulled from); `podman images` lists local images",
            )
        return proc.stdout.strip()

    def image_config(self, *, image: str) -> ImageConfig:
        proc = self._podman("image", "inspect", "--format", "json", image, check=False)
        if proc.returncode != 0:
            raise ImageNotFound(f"image {image!r} not found locally",
                                hint="build or import it first; `podman images` lists local images")
        config = json.loads(proc.stdout)[0].get("Config") or {}
        return ImageConfig(command=tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
                           user=config.get("User") or "")

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
        args = ["run", "--detach", "--pull=never", "--name", name]
        if limits and limits.memory_bytes:
            args += ["--memory", str(limits.memory_bytes)]
        if limits and limits.cpus:
            args += ["--cpus", f"{limits.cpus:g}"]
        if log_max_bytes:
            args += ["--log-opt", f"max-size={log_max_bytes}"]
        if extras:
            args += ["--entrypoint", extras.entrypoint, "--user", extras.user, "--hostname", extras.hostname]
            args += [f"--cap-add={c}" for c in extras.cap_add] + [f"--security-opt={o}" for o in extras.security_opt]
            args += ["--network", extras.network] if extras.network else []
            args += ["--ip", extras.ip] if extras.ip else []
            args += ["--mac-address", extras.mac] if extras.mac else []
        for volume in volumes:
            args += ["--volume", volume]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        for port in ports:
            args += ["--publish", port.to_engine_arg()]
        # Values go through a memfd, never argv (any user can read a process's command line with `ps`) nor a file
        # on disk (a SIGKILL at the wrong moment left /tmp/warmstart-env-*.env with the secret in it): the memfd
        # lives only as long as an fd to it is open, here and in podman, which reads it as /dev/fd/N.
        lines = []
        for key, value in env.items():
            if "\n" in value:
                raise UsageError(f"environment variable {key}: values with a newline cannot be passed to podman")
            lines.append(f"{key}={value}\n")
        fds = [_memfd("warmstart-env", "".join(lines).encode())]
        try:
            args += ["--env-file", f"/dev/fd/{fds[0]}"]
            if secrets:
                # The init's secrets: a memfd that podman passes on as the container's fd 3 (--preserve-fds),
                # which the init reads once and truncates; podman records only the count of fds.
                fds.append(_memfd("warmstart-secrets", sandbox.secrets_payload(secrets)))
                args += ["--preserve-fds", "1", "--env", f"{sandbox.SECRETS_FD_VAR}=3"]
            args += ["--", image, *command]
            return self._podman(*args, pass_fds=tuple(fds), fd3=fds[1] if secrets else None).stdout.strip()
        finally:
            for fd in fds:
                os.close(fd)

    def inspect(self, *, container: str) -> ContainerState | None:
        proc = self._podman("container", "inspect", "--format", "json", container, check=False)
        if proc.returncode != 0:
            return None
        return _state(json.loads(proc.stdout)[0])

    def logs(self, *, container: str, tail: int = 20) -> str:
        # Not `podman logs --tail`: podman 4.3 drops a line that reached its k8s-file log in two parts (a "P"
        # partial record, then an "F" one, as `python -u`'s print writes text and newline separately).
        proc = self._podman("logs", container, check=False)
        return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-tail:])

    def exec(self, *, container: str, command: tuple[str, ...] | list[str], timeout: float,
             env: Mapping[str, str] | None = None) -> ExecResult:
        fds = [_memfd("warmstart-env", "".join(f"{k}={v}\n" for k, v in env.items()).encode())] if env else []
        try:
            argv = [self.binary, "exec", *(["--env-file", f"/dev/fd/{fds[0]}"] if fds else []), container, *command]
            proc = run_to_completion(argv, timeout=timeout, pass_fds=tuple(fds))
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"exec {' '.join(command)} in {container} did not finish within {timeout:g}s") from exc
        except FileNotFoundError as exc:
            raise EngineUnavailable(f"podman not found on PATH ({self.binary})") from exc
        finally:
            for fd in fds:
                os.close(fd)
        # podman exec: 125 = podman itself failed, 126 = cannot invoke, 127 = not found; else the command's code.
        if proc.returncode == 125:
            raise self._error(("exec",), proc)
        return ExecResult(proc.returncode, (proc.stdout + proc.stderr).strip())

    def kill(self, *, container: str, signal: str) -> None:
        self._podman("kill", "--signal", signal, container, timeout=30)

    def build_image(self, *, context: Path, containerfile: str, tag: str, labels: dict[str, str]) -> str:
        args = ["build", "--quiet", "--pull=never", "-f", str(context / containerfile), "-t", tag]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        proc = self._podman(*args, str(context), timeout=1800, check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            raise EngineError(f"podman build of {context} failed: {self._error_line(proc)}", details=tail)
        return proc.stdout.strip().splitlines()[-1]

    def load_image(self, *, archive: Path) -> str:
        proc = self._podman("load", "--input", str(archive), timeout=600, check=False)
        if proc.returncode != 0:
            raise EngineError(f"podman load of {archive.name} failed: {self._error_line(proc)}")
        return proc.stdout.strip().splitlines()[-1].removeprefix("Loaded image: ").removeprefix("Loaded image(s): ")

    def checkpoint(self, *, container: str, dest: Path, leave_running: bool = False) -> None:
        extra = ["--leave-running"] if leave_running else []
        proc = self._podman(
            "container", "checkpoint", "--export", str(dest), "--compress", "none", *extra, container, check=False
        )
        if proc.returncode != 0:
            static = self._static_dir(container)
            excerpt = criu_log_excerpt(static / DUMP_LOG) if static else ""
            raise CheckpointError(
                f"checkpoint of container {container} failed: {self._error_line(proc)}",
                details=excerpt,
                hint="`warmstart doctor --smoke` checks CRIU and the runtime",
            )

    def restore(self, *, archive: Path, name: str, ports: list[PortBinding]) -> str:
        # A new container from the archive: fresh IP and MAC (several restored copies run at once), ports remapped.
        args = ["container", "restore", "--import", str(archive), "--name", name, "--ignore-static-ip",
                "--ignore-static-mac"]
        for port in ports:
            args += ["--publish", port.to_engine_arg()]
        proc = self._podman(*args, check=False)
        if proc.returncode != 0:
            static = self._static_dir(name)
            excerpt = criu_log_excerpt(static / RESTORE_LOG) if static else ""
            self.remove(container=name)
            raise RestoreError(
                f"restore from {archive} failed: {self._error_line(proc)}",
                details=excerpt,
            )
        return proc.stdout.strip().splitlines()[-1]

    def stop(self, *, container: str, timeout: float) -> None:
        self._podman("stop", "--ignore", "--time", str(int(timeout)), container, timeout=timeout + 60)

    def stream_logs(self, *, container: str, follow: bool) -> None:
        try:  # inherits our stdout/stderr: the log is streamed as podman reads it
            subprocess.run([self.binary, "logs", *(["--follow"] if follow else []), container], check=False,
                           stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise EngineUnavailable(f"podman not found on PATH ({self.binary})") from exc

    def copy_from(self, *, container: str, src: str, dest: Path) -> None:
        self._podman("cp", f"{container}:{src}", str(dest), timeout=600)

    def remove(self, *, container: str) -> None:
        self._podman("rm", "--force", "--ignore", "--time", "0", container, timeout=60)

    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        args = ["ps", "--all", "--quiet", "--no-trunc"]
        for key, value in labels.items():
            args += ["--filter", f"label={key}={value}"]
        ids = self._podman(*args).stdout.split()
        if not ids:
            return []
        proc = self._podman("container", "inspect", "--format", "json", *ids, check=False)
        # A container removed between the two calls makes inspect fail: ask again one by one.
        if proc.returncode != 0:
            return [s for s in (self.inspect(container=i) for i in ids) if s is not None]
        return [_state(raw) for raw in json.loads(proc.stdout)]


def _memfd(name: str, data: bytes) -> int:
    """A memfd holding `data`, read from its start, numbered 10 or above (never 3, which --preserve-fds uses):
    it lives only while an fd to it is open, so no crash can leave it behind, unlike a file."""
    first = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        fd = fcntl.fcntl(first, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(first)
    while data:
        data = data[os.write(fd, data):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_to_completion(argv: list[str], *, timeout: float, pass_fds: tuple[int, ...] = ()
                      ) -> subprocess.CompletedProcess[str]:
    """subprocess.run, but podman is never cut off half-way by our own interruption.

    The child runs in its own session, so a terminal's Ctrl-C (sent to the whole foreground group) does not reach
    it; when this process is interrupted (SIGINT/SIGTERM raise KeyboardInterrupt here) the call still waits for
    podman to finish, shielded, and then re-raises. Killing podman mid-restore is what leaked running apps: its
    database no longer listed the container while conmon and the app ran on. The caller then removes the
    container by name. A timeout still kills podman (a hung engine is worse)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, pass_fds=pass_fds)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    except BaseException:
        with shielded():
            try:
                proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def available() -> bool:
    return shutil.which("podman") is not None


def _state(raw: dict[str, Any]) -> ContainerState:
    state = raw.get("State", {})
    ports = published_ports(raw)
    return ContainerState(
        id=raw["Id"],
        name=raw["Name"].lstrip("/"),
        status=state.get("Status", ""),
        running=bool(state.get("Running")),
        exit_code=int(state.get("ExitCode", 0)),
        restored=bool(state.get("Restored"))
        or (raw.get("Config", {}).get("Labels") or {}).get(MODE_LABEL) == "restored",
        labels=raw.get("Config", {}).get("Labels") or {},
        ports=ports,
        image=raw.get("ImageName", ""),
        created=raw.get("Created", ""),
        upper_dir=upper_dir(raw),
        pid=int(state.get("Pid") or 0),
        **_address(raw),
    )


def _address(raw: dict[str, Any]) -> dict[str, str]:
    """Its one network's IP and MAC (`podman inspect` NetworkSettings.Networks), none when on several."""
    networks = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    if len(networks) != 1:
        return {}
    (net,) = networks.values()
    return {"ip": str(net.get("IPAddress") or ""), "mac": str(net.get("MacAddress") or "")}
