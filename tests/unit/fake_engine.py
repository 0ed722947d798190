"""An in-memory engine for fast tests of launch logic. Real checkpoint/restore is proven in tests/podman."""

from __future__ import annotations

from pathlib import Path

from warmstart.engines.base import ContainerState, Engine, EngineInfo, ExecResult
from warmstart.errors import ImageNotFound, RestoreError
from warmstart.spec import PortBinding


class FakeEngine(Engine):
    name = "podman"  # pretends to be podman so manifests match

    def __init__(self, images: dict[str, str] | None = None) -> None:
        self.images = images or {"img": "sha256:aaa"}
        self.containers: dict[str, ContainerState] = {}
        self.fail_restore: str | None = None
        self.calls: list[str] = []
        self.exec_codes: dict[tuple[str, ...], int] = {}

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

    def run(self, *, name, image, command, env, ports, labels, volumes=(), log_max_bytes=None) -> str:  # type: ignore[no-untyped-def]
        self.calls.append(f"run {name}")
        self.image_id(image=image)
        return self._start(name, ports, False, labels)

    def inspect(self, *, container: str) -> ContainerState | None:
        return self.containers.get(container)

    def logs(self, *, container: str, tail: int = 20) -> str:
        return ""

    def exec(self, *, container: str, command: tuple[str, ...] | list[str], timeout: float) -> ExecResult:
        self.calls.append(f"exec {' '.join(command)}")
        return ExecResult(self.exec_codes.get(tuple(command), 0), "")

    def kill(self, *, container: str, signal: str) -> None:
        self.calls.append(f"kill {signal}")

    def build_image(self, *, context: Path, containerfile: str, tag: str, labels: dict[str, str]) -> str:
        self.images[tag] = "sha256:built"
        return "sha256:built"

    def checkpoint(self, *, container: str, dest: Path, leave_running: bool = False) -> None:
        self.calls.append(f"checkpoint {container}")
        dest.write_bytes(b"checkpoint of " + container.encode())
        if not leave_running:
            self.containers.pop(container)

    def restore(self, *, archive: Path, name: str, ports: list[PortBinding]) -> str:
        self.calls.append(f"restore {name}")
        if self.fail_restore:
            raise RestoreError(self.fail_restore, details="restore.log: Error (criu/cr-restore.c:1): boom")
        return self._start(name, ports, True, {"io.warmstart.app": "x"})

    def remove(self, *, container: str) -> None:
        self.calls.append(f"remove {container}")
        self.containers.pop(container, None)

    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        return [c for c in self.containers.values() if all(c.labels.get(k) == v for k, v in labels.items())]
