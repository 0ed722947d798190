"""What a snapshot holds, decoded with CRIU's own image decoder (pycriu, the library behind `crit`): the process
tree with commands, memory per process, open files and sockets, the environment's variable *names* (values stay
unread: they may be secrets), and what made it. For `warmstart cache inspect --contents`.

pycriu is not on PyPI: scripts/setup-host installs Debian's python3-pycriu (the CRIU release we run) into
/opt/warmstart/pycriu and points the venv at it; protobuf comes from PyPI.
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from warmstart.errors import CacheError

PAGE_SIZE = 4096
PE_PRESENT = 1 << 2  # criu/include/pagemap.h
TCP_STATES = {1: "established", 10: "listening"}  # include/net/tcp_states.h (others are shown by number)
SOCKET_FAMILIES = {1: "unix", 2: "ipv4", 10: "ipv6"}
# podman's checkpoint archive keeps CRIU's images under this directory (podman libpod/container_internal_linux.go
# exportCheckpoint; checkpointctl lib/metadata.go CheckpointDirectory).
PODMAN_CHECKPOINT_DIR = "checkpoint"


def _pycriu() -> Any:
    try:
        import pycriu  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise CacheError("CRIU's image decoder (pycriu) is not installed",
                         hint="run scripts/setup-host (it installs Debian's python3-pycriu into /opt/warmstart)") \
            from exc
    return pycriu


@contextlib.contextmanager
def image_dir(path: Path) -> Iterator[Path]:
    """The CRIU image dir of a cache snapshot dir: a sandbox one's images/, or a container-mode one's images taken
    out of checkpoint.tar into a private temp dir for the time of the block."""
    if (path / "images").is_dir():
        yield path / "images"
        return
    archive = path / "checkpoint.tar"
    if not archive.is_file():
        raise CacheError(f"{path} holds no CRIU images (neither images/ nor checkpoint.tar)")
    with tempfile.TemporaryDirectory(prefix="warmstart-inspect-") as tmp:
        with tarfile.open(archive, "r:") as tar:  # ours, uncompressed (podman --compress none)
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(f"{PODMAN_CHECKPOINT_DIR}/")
                       and "/" not in m.name[len(PODMAN_CHECKPOINT_DIR) + 1:] and m.name.endswith(".img")]
            for m in members:
                m.name = Path(m.name).name  # flat, and nothing outside tmp whatever the archive says
                tar.extract(m, tmp, filter="data")
        yield Path(tmp)


def load_image(images: Path, name: str) -> list[dict[str, Any]]:
    """The entries of one CRIU image ([] when the image is absent); CacheError when it cannot be decoded."""
    pycriu = _pycriu()
    try:
        with open(images / name, "rb") as fh:
            entries: list[dict[str, Any]] = pycriu.images.load(fh)["entries"]
            return entries
    except FileNotFoundError:
        return []
    except Exception as exc:  # pycriu raises its own and protobuf's errors for a damaged image
        raise CacheError(f"cannot decode {name}: {exc}") from exc


def describe_snapshot(path: Path) -> dict[str, Any]:
    """The contents of a cache snapshot dir: a sandbox one (images/) or a container-mode one (checkpoint.tar)."""
    with image_dir(path) as images:
        return describe_images(images)


def describe_images(images: Path) -> dict[str, Any]:
    """Decode a CRIU image dir."""

    def load(name: str) -> list[dict[str, Any]]:
        return load_image(images, name)

    files = {f["id"]: f for f in load("files.img")}
    processes = []
    for task in load("pstree.img"):
        pid = task["pid"]
        core = (load(f"core-{pid}.img") or [{}])[0]
        ids = (load(f"ids-{pid}.img") or [{}])[0]
        mm = (load(f"mm-{pid}.img") or [{}])[0]
        pagemap = load(f"pagemap-{pid}.img")
        memory = DumpedMemory(images, pagemap)
        argv = memory.read(mm.get("mm_arg_start", 0), mm.get("mm_arg_end", 0)).split(b"\0")
        env = memory.read(mm.get("mm_env_start", 0), mm.get("mm_env_end", 0)).split(b"\0")
        fds = [{"fd": fd["fd"], **_file(files.get(fd["id"], {"type": fd["type"]}))}
               for fd in load(f"fdinfo-{ids.get('files_id', pid)}.img")]
        processes.append({
            "pid": pid,
            "ppid": task.get("ppid", 0),
            "threads": len(task.get("threads", [])),
            "comm": core.get("tc", {}).get("comm", ""),
            "command": [a.decode(errors="replace") for a in argv if a],
            "memory_bytes": memory.size,
            "env_names": sorted({e.split(b"=", 1)[0].decode(errors="replace") for e in env if b"=" in e}),
            "fds": sorted(fds, key=lambda f: f["fd"]),
        })
    sockets = [f for p in processes for f in p["fds"] if f.get("kind") == "socket"]
    inventory = (load("inventory.img") or [{}])[0]
    return {
        "processes": processes,
        "listening": sorted({s["port"] for s in sockets if s.get("state") == "listening" and s.get("port")}),
        "established": sum(1 for s in sockets if s.get("state") == "established"),
        "memory_bytes": sum(p["memory_bytes"] for p in processes),
        "criu_image_version": inventory.get("img_version"),
    }


def _file(entry: dict[str, Any]) -> dict[str, Any]:
    kind = entry.get("type", "")
    if kind == "REG":
        return {"kind": "file", "path": entry["reg"].get("name", "")}
    if kind == "PIPE":
        return {"kind": "pipe", "id": entry["pipe"].get("pipe_id")}
    if kind == "INETSK":
        isk = entry["isk"]
        return {"kind": "socket", "family": SOCKET_FAMILIES.get(isk.get("family"), str(isk.get("family"))),
                "protocol": {6: "tcp", 17: "udp"}.get(isk.get("proto"), str(isk.get("proto"))),
                "state": TCP_STATES.get(isk.get("state"), str(isk.get("state"))), "port": isk.get("src_port"),
                "peer_port": isk.get("dst_port") or None}
    if kind == "UNIXSK":
        usk = entry["usk"]
        return {"kind": "socket", "family": "unix", "state": TCP_STATES.get(usk.get("state"), str(usk.get("state"))),
                "path": usk.get("name", b"").decode(errors="replace") if isinstance(usk.get("name"), bytes)
                else str(usk.get("name", ""))}
    return {"kind": kind.lower() or "unknown"}


class DumpedMemory:
    """A process's dumped pages: what its pagemap says is where in pages-<id>.img."""

    def __init__(self, images: Path, pagemap: list[dict[str, Any]]) -> None:
        self.runs: list[tuple[int, int, int]] = []  # (vaddr, size, offset in the pages file)
        self.pages = images / f"pages-{pagemap[0]['pages_id']}.img" if pagemap else None
        offset = 0
        for e in pagemap[1:]:
            size = e.get("nr_pages", e.get("compat_nr_pages", 0)) * PAGE_SIZE
            if int(e.get("flags", PE_PRESENT)) & PE_PRESENT:
                self.runs.append((e["vaddr"], size, offset))
                offset += size
        self.size = offset

    def read(self, start: int, end: int) -> bytes:
        """Bytes start..end (at most 64 KiB: an argv or an environment block), b"" where not dumped."""
        end = min(end, start + (64 << 10))
        if self.pages is None or end <= start:
            return b""
        out = bytearray()
        with open(self.pages, "rb") as fh:
            addr = start
            while addr < end:
                run = next((r for r in self.runs if r[0] <= addr < r[0] + r[1]), None)
                if run is None:
                    break
                take = min(end, run[0] + run[1]) - addr
                fh.seek(run[2] + addr - run[0])
                out += fh.read(take)
                addr += take
        return bytes(out)
