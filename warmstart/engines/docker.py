"""Docker, through the Docker Engine API (the `docker` package), with its experimental checkpoint support.

docker-py has no checkpoint call, so checkpoint and restore use its low-level APIClient against the documented
endpoints: `POST /containers/{id}/checkpoints` and `POST /containers/{id}/start?checkpoint=NAME`.

Docker restores a checkpoint only into the container it was taken from, from that container's own checkpoint dir
("custom checkpointdir is not supported"). warmstart still makes NEW instances from one snapshot: the snapshot
archive holds the container's create config, the CRIU images and the files the app changed in its root
filesystem; a restore creates a fresh container from that config (new name, new ports), places the CRIU images
in that container's checkpoint dir under Docker's root, copies the changed files in, and starts it from the
checkpoint. What Docker cannot do is said plainly: restoring requires root access to Docker's data root on the
same host as the daemon (a remote DOCKER_HOST cannot restore), and files the app deleted from its image are not
re-deleted on restore.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from warmstart.core import sandbox
from warmstart.core.criu import DUMP_LOG, RESTORE_LOG
from warmstart.core.sandbox import RunExtras
from warmstart.core.spec import PortBinding
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
from warmstart.errors import CheckpointError, EngineError, EngineUnavailable, ImageNotFound, RestoreError

CHECKPOINT_NAME = "warmstart"
# Members of warmstart's docker snapshot archive (podman's equivalents, for comparison: config.dump,
# checkpoint/, rootfs-diff.tar; checkpointctl lib/metadata.go).
CONFIG_MEMBER = "docker-config.json"  # the create config of the checkpointed container
CHECKPOINT_DIR = "checkpoint"  # CRIU images, as Docker wrote them under <root>/containers/<id>/checkpoints/<name>
ROOTFS_DIFF = "rootfs-diff.tar"  # files added or changed in the container's root filesystem (docker diff)
LOG_MEMBER = "ctr.log"  # the container's output up to the checkpoint (as podman's archive carries it)
MODE_LABEL = "io.warmstart.mode"  # "restored" on containers made from a snapshot (docker does not record it)


class DockerEngine(Engine):
    name = "docker"

    def __init__(self) -> None:
        import docker

        self._docker = docker
        try:
            self.client = docker.from_env(timeout=300)
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(f"docker daemon cannot be reached: {exc}",
                                    hint="start it (scripts/docker-daemon start) or check DOCKER_HOST") from exc
        self.api = self.client.api

    @contextlib.contextmanager
    def _translated(self, what: str) -> Any:
        errors = self._docker.errors
        try:
            yield
        except errors.ImageNotFound as exc:
            raise ImageNotFound(f"image not found locally: {exc.explanation}",
                                hint="build or load it first (`docker images` lists local images)") from exc
        except errors.APIError as exc:
            raise EngineError(f"docker {what} failed: {exc.explanation or exc}") from exc
        except errors.DockerException as exc:
            raise EngineUnavailable(f"docker {what} failed: {exc}") from exc

    @functools.cached_property
    def _data_root(self) -> Path:
        with self._translated("info"):
            return Path(self.api.info()["DockerRootDir"])

    def _root(self) -> Path:
        return self._data_root

    def info(self) -> EngineInfo:
        with self._translated("info"):
            version = self.api.version()
            info = self.api.info()
        return EngineInfo(name="docker", version=version.get("Version", ""), runtime=info.get("DefaultRuntime", ""),
                          runtime_version=(info.get("RuncCommit") or {}).get("ID", ""))

    def experimental(self) -> bool:
        with self._translated("version"):
            return bool(self.api.version().get("Experimental"))

    def image_id(self, *, image: str) -> str:
        try:
            return str(self.api.inspect_image(image)["Id"])
        except self._docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {image!r} not found locally",
                                hint="build or load it first (no registry is pulled from); `docker images` lists "
                                     "local images") from exc

    def _create(self, *, name: str, image: str, command: list[str] | None, env: dict[str, str] | list[str],
                ports: list[PortBinding], labels: dict[str, str], volumes: tuple[str, ...] = (),
                extra: dict[str, Any] | None = None, log_max_bytes: int | None = None,
                extras: RunExtras | None = None, limits: Limits | None = None) -> str:
        log_config = {"Type": "json-file", "Config": {"max-size": str(log_max_bytes)}} if log_max_bytes else None
        privileges: dict[str, Any] = {}
        if extras and extras.ip:
            raise EngineError("docker gives a fixed address only on a user-defined network: --ip and "
                              "--keep-address are for podman")
        if extras:
            privileges = {"cap_add": list(extras.cap_add), "security_opt": list(extras.security_opt),
                          **({"network_mode": extras.network} if extras.network else {})}
            extra = {**(extra or {}), "entrypoint": [extras.entrypoint], "user": extras.user,
                     "hostname": extras.hostname}
        if limits and limits.memory_bytes:
            privileges["mem_limit"] = limits.memory_bytes
        if limits and limits.cpus:
            privileges["nano_cpus"] = int(limits.cpus * 1e9)
        host_config = self.api.create_host_config(
            port_bindings={p.key: (p.host_ip, p.host_port or None) for p in ports}, binds=list(volumes) or None,
            log_config=log_config, **privileges)
        with self._translated("create"):
            created = self.api.create_container(
                image=image, command=command or None, name=name, labels=labels, detach=True,
                environment=env, ports=[(p.container_port, p.protocol) for p in ports], host_config=host_config,
                **(extra or {}))
        return str(created["Id"])

    def image_config(self, *, image: str) -> ImageConfig:
        try:
            config = self.api.inspect_image(image).get("Config") or {}
        except self._docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {image!r} not found locally",
                                hint="build or load it first; `docker images` lists local images") from exc
        return ImageConfig(command=tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
                           user=config.get("User") or "")

    def run(self, *, name: str, image: str, command: list[str], env: dict[str, str], ports: list[PortBinding],
            labels: dict[str, str], volumes: tuple[str, ...] = (), log_max_bytes: int | None = None,
            extras: RunExtras | None = None, limits: Limits | None = None,
            secrets: Mapping[str, str] | None = None) -> str:
        self.image_id(image=image)
        stdin = {"stdin_open": True} if secrets else {}  # the init reads to the payload's end mark, not EOF
        cid = self._create(name=name, image=image, command=command,
                           env={**env, sandbox.SECRETS_FD_VAR: "0"} if secrets else env,
                           ports=ports, labels=labels, volumes=volumes, log_max_bytes=log_max_bytes,
                           extras=extras, limits=limits, extra=stdin)
        if not secrets:
            with self._translated("start"):
                self.api.start(cid)
            return cid
        # The init's secrets go to its stdin, attached before the start: docker keeps no record of what went
        # through it (its create config would show an env value to anyone who can `docker inspect`).
        with self._translated("attach"):
            sock = self.api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        try:
            with self._translated("start"):
                self.api.start(cid)
            raw = getattr(sock, "_sock", sock)
            raw.sendall(sandbox.secrets_payload(secrets))
        finally:
            sock.close()
        return cid

    def inspect(self, *, container: str) -> ContainerState | None:
        try:
            raw = self.api.inspect_container(container)
        except self._docker.errors.NotFound:
            return None
        except self._docker.errors.APIError as exc:
            raise EngineError(f"docker inspect failed: {exc.explanation}") from exc
        return _state(raw)

    def logs(self, *, container: str, tail: int = 20) -> str:
        try:
            raw: bytes = self.api.logs(container, tail=tail)
            return raw.decode(errors="replace").strip()
        except self._docker.errors.APIError:
            return ""

    def exec(self, *, container: str, command: tuple[str, ...] | list[str], timeout: float,
             env: Mapping[str, str] | None = None) -> ExecResult:
        with self._translated("exec"):
            exec_id = self.api.exec_create(container, list(command), environment=dict(env) if env else None)["Id"]
        out: dict[str, bytes] = {}

        def run() -> None:
            with contextlib.suppress(Exception):
                out["data"] = self.api.exec_start(exec_id)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise EngineError(f"exec {' '.join(command)} in {container} did not finish within {timeout:g}s")
        with self._translated("exec"):
            code = self.api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(int(code if code is not None else 126), out.get("data", b"").decode(errors="replace").strip())

    def kill(self, *, container: str, signal: str) -> None:
        with self._translated("kill"):
            self.api.kill(container, signal=signal)

    def build_image(self, *, context: Path, containerfile: str, tag: str, labels: dict[str, str]) -> str:
        with self._translated("build"):
            image, _ = self.client.images.build(path=str(context), dockerfile=containerfile, tag=tag, labels=labels,
                                                rm=True, pull=False)
        return str(image.id)

    def load_image(self, *, archive: Path) -> str:
        with self._translated("load"), archive.open("rb") as fh:
            loaded = self.client.images.load(fh)
        return str(loaded[0].tags[0] if loaded and loaded[0].tags else loaded[0].id if loaded else "")

    def checkpoint(self, *, container: str, dest: Path, leave_running: bool = False) -> None:
        with self._translated("inspect"):
            raw = self.api.inspect_container(container)
        cdir = self._root() / "containers" / raw["Id"] / "checkpoints" / CHECKPOINT_NAME
        shutil.rmtree(cdir, ignore_errors=True)
        changed = self._changed_files(raw["Id"])
        with self._translated("logs"):
            output = self.api.logs(raw["Id"])
        try:
            resp = self.api._post_json(self.api._url("/containers/{0}/checkpoints", raw["Id"]),
                                       data={"CheckpointID": CHECKPOINT_NAME, "Exit": not leave_running})
            self.api._raise_for_status(resp)
        except self._docker.errors.APIError as exc:
            raise CheckpointError(f"checkpoint of container {container} failed: {exc.explanation or exc}",
                                  details=criu_log_excerpt(cdir / DUMP_LOG),
                                  hint="docker needs \"experimental\": true and a CRIU it can run (doctor)") from exc
        try:
            with tarfile.open(dest, "w") as tar:
                config = json.dumps(_create_config(raw)).encode()
                info = tarfile.TarInfo(CONFIG_MEMBER)
                info.size = len(config)
                tar.addfile(info, io.BytesIO(config))
                log = tarfile.TarInfo(LOG_MEMBER)
                log.size = len(output)
                tar.addfile(log, io.BytesIO(output))
                tar.add(cdir, arcname=CHECKPOINT_DIR)
                if changed:
                    tar.addfile(*self._rootfs_diff(raw["Id"], changed))
        finally:
            shutil.rmtree(cdir, ignore_errors=True)

    def _changed_files(self, cid: str) -> list[str]:
        """Paths to carry over from the container's root filesystem (`docker diff`): every top-most added path
        (kind 1; an added dir brings its contents) and every changed leaf (kind 0 with nothing below it: a
        modified file; a changed dir is only listed because something inside it changed)."""
        with self._translated("diff"):
            diff = self.api.diff(cid) or []
        paths = [d["Path"] for d in diff]

        def under(p: str, q: str) -> bool:
            return q.startswith(p.rstrip("/") + "/")

        added = [d["Path"] for d in diff if d["Kind"] == 1]
        top_added = [p for p in added if not any(under(a, p) for a in added if a != p)]
        leaves = [d["Path"] for d in diff if d["Kind"] == 0 and not any(under(d["Path"], q) for q in paths)]
        return sorted(set(top_added) | {p for p in leaves if not any(under(a, p) for a in top_added)})

    def _rootfs_diff(self, cid: str, paths: list[str]) -> tuple[tarfile.TarInfo, io.BytesIO]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as out:
            for path in paths:
                with self._translated("export of changed files"):
                    stream, _ = self.api.get_archive(cid, path)
                data = io.BytesIO(b"".join(stream))
                parent = str(Path(path).parent).lstrip("/")
                with tarfile.open(fileobj=data) as part:
                    for member in part.getmembers():
                        member.name = f"{parent}/{member.name}" if parent else member.name
                        out.addfile(member, part.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(ROOTFS_DIFF)
        info.size = buf.tell()
        buf.seek(0)
        return info, buf

    def restore(self, *, archive: Path, name: str, ports: list[PortBinding]) -> str:
        try:
            with tarfile.open(archive, "r:") as tar:  # ours, uncompressed
                config = json.loads(tar.extractfile(CONFIG_MEMBER).read())  # type: ignore[union-attr]
                cid = self._create(name=name, image=config["image"], command=config["cmd"], env=config["env"],
                                   ports=ports, labels={**config["labels"], MODE_LABEL: "restored"},
                                   extra={"entrypoint": config["entrypoint"], "working_dir": config["working_dir"],
                                          "user": config["user"], "hostname": config["hostname"]})
                cdir = self._root() / "containers" / cid / "checkpoints" / CHECKPOINT_NAME
                cdir.mkdir(parents=True, mode=0o700)
                tar.extractall(cdir, members=checkpoint_members(tar), filter="data")
                if ROOTFS_DIFF in tar.getnames():
                    with self._translated("copy of changed files"):
                        self.api.put_archive(cid, "/", tar.extractfile(ROOTFS_DIFF).read())  # type: ignore[union-attr]
                resp = self.api._post(self.api._url("/containers/{0}/start", cid),
                                      params={"checkpoint": CHECKPOINT_NAME})
                self.api._raise_for_status(resp)
        except (self._docker.errors.APIError, KeyError, OSError, tarfile.TarError, ValueError) as exc:
            root = self._root() / "containers"
            state = self.inspect(container=name)
            log = root / state.id / "checkpoints" / CHECKPOINT_NAME / RESTORE_LOG if state else Path("/nonexistent")
            excerpt = criu_log_excerpt(log)
            self.remove(container=name)
            detail = getattr(exc, "explanation", None) or str(exc)
            raise RestoreError(f"restore from {archive} failed: {detail}", details=excerpt) from exc
        return cid

    def stop(self, *, container: str, timeout: float) -> None:
        try:
            self.api.stop(container, timeout=int(timeout))
        except self._docker.errors.NotFound:
            pass
        except self._docker.errors.APIError as exc:
            raise EngineError(f"docker stop failed: {exc.explanation}") from exc

    def stream_logs(self, *, container: str, follow: bool) -> None:
        import sys

        with self._translated("logs"):
            for chunk in self.api.logs(container, stream=True, follow=follow):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

    def copy_from(self, *, container: str, src: str, dest: Path) -> None:
        """`docker cp`: the API's tar of `src`, unpacked as regular files and dirs only (the container's content is
        the app's to shape: no links, devices or paths out of `dest`)."""
        with self._translated("copy"):
            stream, _ = self.api.get_archive(container, src, chunk_size=1 << 20)
        dest.mkdir(mode=0o700)
        base = Path(src.rstrip("/")).name
        # Unpacked as it arrives (tar's stream mode): a checkpoint holds the app's whole memory, never all in ours.
        with self._translated("copy"), tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:
            for member in tar:
                rel = Path(member.name)
                if rel.parts[:1] != (base,) or ".." in rel.parts or rel.is_absolute():
                    raise EngineError(f"docker cp of {src} from {container} holds {member.name[:80]!r}: refused")
                target = dest.joinpath(*rel.parts[1:])
                if member.isdir():
                    target.mkdir(mode=0o700, exist_ok=True)
                elif member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(data, out, 1 << 20)
                else:
                    raise EngineError(f"docker cp of {src} from {container} holds {member.name[:80]!r}, not a "
                                      "regular file or directory: refused")

    def remove(self, *, container: str) -> None:
        try:
            self.api.remove_container(container, force=True, v=True)
        except self._docker.errors.NotFound:
            pass
        except self._docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise EngineError(f"docker rm failed: {exc.explanation}") from exc

    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        with self._translated("ps"):
            found = self.api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        states = (self.inspect(container=c["Id"]) for c in found)
        return [s for s in states if s is not None]


def checkpoint_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The CRIU image files under CHECKPOINT_DIR/, renamed relative to it. The archive is outside input (a
    snapshot can come from a registry): only regular files and directories with plain relative names are
    taken; anything else (an absolute name, a `..` component, a link, a device) refuses the whole archive."""
    members = []
    for m in tar.getmembers():
        if not m.name.startswith(CHECKPOINT_DIR + "/"):
            continue
        rel = m.name[len(CHECKPOINT_DIR) + 1:].rstrip("/") if m.isdir() else m.name[len(CHECKPOINT_DIR) + 1:]
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"archive member {m.name!r} is not a plain relative name: refused")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"archive member {m.name!r} is not a regular file or directory: refused")
        m.name = rel
        members.append(m)
    return members


def _create_config(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = raw["Config"]
    return {"image": raw["Image"], "cmd": cfg.get("Cmd"), "entrypoint": cfg.get("Entrypoint"),
            "env": cfg.get("Env") or [], "labels": cfg.get("Labels") or {},
            "working_dir": cfg.get("WorkingDir") or None,
            "user": cfg.get("User") or None, "hostname": cfg.get("Hostname") or None}


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (docker-py's archive stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")  # a view: taking a little from a big chunk copies nothing else

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, b"")
            if not chunk:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _state(raw: dict[str, Any]) -> ContainerState:
    state = raw.get("State", {})
    ports = published_ports(raw)
    labels = raw.get("Config", {}).get("Labels") or {}
    return ContainerState(
        id=raw["Id"], name=raw["Name"].lstrip("/"), status=state.get("Status", ""), running=bool(state.get("Running")),
        exit_code=int(state.get("ExitCode", 0)), restored=labels.get(MODE_LABEL) == "restored", labels=labels,
        ports=ports, image=raw.get("Config", {}).get("Image", ""), created=raw.get("Created", ""),
        upper_dir=upper_dir(raw),
        pid=int(state.get("Pid") or 0),
    )


def available() -> bool:
    return Path("/var/run/docker.sock").exists() or bool(os.environ.get("DOCKER_HOST"))
