"""An in-memory engine for fast tests of launch logic. Real checkpoint/restore is proven in tests/podman."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from warmstart.core import sandbox
from warmstart.core.spec import PortBinding
from warmstart.engines.base import ContainerState, Engine, EngineInfo, ExecResult, ImageConfig
from warmstart.errors import ImageNotFound, RestoreError


class FakeEngine(Engine):
    name = "podman"  # pretends to be podman so manifests match

    def __init__(self, images: dict[str, str] | None = None) -> None:
        self.images = images or {"img": "sha256:aaa"}
        self.containers: dict[str, ContainerState] = {}
        self.fail_restore: str | Exception | None = None  # a message (RestoreError) or the error to raise
        self.calls: list[str] = []
        self.exec_codes: dict[tuple[str, ...], int] = {}
        self.mounts: dict[str, dict[str, Path]] = {}  # container -> container path -> host path

    def image_config(self, *, image: str) -> ImageConfig:
        self.image_id(image=image)
        return ImageConfig(command=("python3", "/app/app.py"), user="")

    def info(self) -> EngineInfo:
        return EngineInfo("podman", "4.3.1", "runc", "1.1.5")

    def image_id(self, *, image: str) -> str:
        if image not in self.images:
            raise ImageNotFound(f"image {image!r} not found locally")
        return self.images[image]

    def _start(self, name: str, ports: list[PortBinding], restored: bool, labels: dict[str, str]) -> str:
        self.containers[name] = ContainerState(
            id=f"id-{name}", name=name, status="running", running=True, exit_code=0, restored=restored,
            labels=labels, ports={p.key: (p.host_ip, p.host_port or 40000) for p in ports},
        )
        return f"id-{name}"

    def run(self, *, name, image, command, env, ports, labels, volumes=(), log_max_bytes=None, extras=None,  # type: ignore[no-untyped-def]
            limits=None, secrets=None) -> str:
        self.image_id(image=image)
        self.mounts[name] = {v.split(":")[1]: Path(v.split(":")[0]) for v in volumes}
        if extras is not None and command[:1] == ["restore"]:  # a sandbox restore: the init restores the app
            self.calls.append(f"restore {name}")
            self._maybe_fail()
            return self._start(name, ports, True, labels)
        self.calls.append(f"run {name}")
        return self._start(name, ports, False, labels)

    def inspect(self, *, container: str) -> ContainerState | None:
        return self.containers.get(container)

    def logs(self, *, container: str, tail: int = 20) -> str:
        return ""

    def exec(self, *, container: str, command: tuple[str, ...] | list[str], timeout: float,
             env: Mapping[str, str] | None = None) -> ExecResult:
        self.calls.append(f"exec {' '.join(command)}")
        if list(command[:2]) == [str(sandbox.INIT), "dump"]:  # what warmstart-init's dump leaves behind
            out = self.mounts[container][sandbox.OUT_MOUNT] / command[3].removeprefix(sandbox.OUT_MOUNT).lstrip("/")
            (out / sandbox.IMAGES_DIR).mkdir(mode=0o700)
            (out / sandbox.IMAGES_DIR / "pages-1.img").write_bytes(b"pages of " + container.encode())
            (out / sandbox.ROOTFS_FILE).write_bytes(b"")
            (out / sandbox.META_FILE).write_text(json.dumps({"schema_version": 1, "pid": 300, "stdio": {}}))
            (out / sandbox.DUMP_LOG).write_text("dump ok")
            return ExecResult(0, "")
        return ExecResult(self.exec_codes.get(tuple(command), 0), "")

    def kill(self, *, container: str, signal: str) -> None:
        self.calls.append(f"kill {signal}")

    def build_image(self, *, context: Path, containerfile: str, tag: str, labels: dict[str, str]) -> str:
        self.images[tag] = "sha256:built"
        return "sha256:built"

    def load_image(self, *, archive: Path) -> str:
        self.images["loaded"] = "sha256:loaded"
        return "loaded"

    def checkpoint(self, *, container: str, dest: Path, leave_running: bool = False) -> None:
        self.calls.append(f"checkpoint {container}")
        dest.write_bytes(b"checkpoint of " + container.encode())
        if not leave_running:
            self.containers.pop(container)

    def restore(self, *, archive: Path, name: str, ports: list[PortBinding]) -> str:
        self.calls.append(f"restore {name}")
        self._maybe_fail()
        return self._start(name, ports, True, {"io.warmstart.app": "x"})

    def _maybe_fail(self) -> None:
        if isinstance(self.fail_restore, Exception):
            raise self.fail_restore
        if self.fail_restore:
            raise RestoreError(self.fail_restore, details="restore.log: Error (criu/cr-restore.c:1): boom")

    def stop(self, *, container: str, timeout: float) -> None:
        self.calls.append(f"stop {container} {timeout:g}")
        state = self.containers.get(container)
        if state is not None:
            import dataclasses

            self.containers[container] = dataclasses.replace(state, running=False, status="exited", exit_code=143)

    def stream_logs(self, *, container: str, follow: bool) -> None:
        print(f"log of {container}")

    def copy_from(self, *, container: str, src: str, dest: Path) -> None:
        self.calls.append(f"copy {container}:{src}")
        dest.mkdir(mode=0o700)

    def remove(self, *, container: str) -> None:
        self.calls.append(f"remove {container}")
        self.containers.pop(container, None)

    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        return [c for c in self.containers.values() if all(c.labels.get(k) == v for k, v in labels.items())]
