"""A private CRI runtime for the Kubernetes tests: containerd 2.1's CRI plugin with its own root, state dir and
socket (the host's docker keeps its containerd), driven with crictl as a kubelet would, and a registry without
auth on 127.0.0.1 (containerd's CRI restore pulls the checkpoint's base image by digest, with no credentials)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

CRI_DIR = Path(os.environ.get("WARMSTART_CRI_DIR", "/opt/warmstart/cri"))
PAUSE_IMAGE = "localhost/warmstart-pause:1"
CONFIG = """version = 3
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/c.sock"
[ttrpc]
  address = "{root}/c.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{root}/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  enable_cdi = false
  restrict_oom_score_adj = true  # root here lacks CAP_SYS_RESOURCE: the sandbox's -998 would fail runc create
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
"""


@dataclass
class Cri:
    root: Path
    registry: str  # 127.0.0.1:PORT, plain HTTP, no auth

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run([str(CRI_DIR / "bin" / "crictl"), "--config", str(self.root / "crictl.yaml"), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)}: {proc.stderr.strip()}\n{self.log_tail()}")
        return proc.stdout.strip()

    def log_tail(self, n: int = 15) -> str:
        lines = (self.root / "containerd.log").read_text(errors="replace").splitlines()
        return "\n".join(ln for ln in lines if "level=error" in ln or "level=warn" in ln)[-4000:] or "\n".join(
            lines[-n:])

    def run_pod(self, name: str, image: str, *, port: int, env: dict[str, str] | None = None) -> str:
        """A pod on the node's network (no CNI here) with one container; the container's ID, started."""
        pod_file, ctr_file = self._pod_files(name, image, port=port, env=env)
        pod_id = self.crictl("runp", str(pod_file))
        ctr_id = self.crictl("create", pod_id, str(ctr_file), str(pod_file))
        self.crictl("start", ctr_id)
        return ctr_id

    def launch_argv(self, name: str, image: str, *, port: int, env: dict[str, str] | None = None) -> list[str]:
        """run_pod as one command, as a kubelet does it (run the sandbox, create, start): what a benchmark times."""
        pod_file, ctr_file = self._pod_files(name, image, port=port, env=env)
        crictl = f"{CRI_DIR}/bin/crictl --config {self.root}/crictl.yaml"
        return ["sh", "-ec", f"p=$({crictl} runp {pod_file}); c=$({crictl} create $p {ctr_file} {pod_file}); "
                             f"{crictl} start $c >/dev/null"]

    def _pod_files(self, name: str, image: str, *, port: int, env: dict[str, str] | None) -> tuple[Path, Path]:
        # As a kubelet asks by default: the node's network here (no CNI), and a PID namespace of the container's
        # own (NamespaceMode CONTAINER; kubelet shares the pod's only with shareProcessNamespace). A pod-shared one
        # makes restores racy: CRIU must get the app's old PID back in a namespace where the runtime's helpers
        # take PIDs too (criu failed: type NOTIFY errno 17, EEXIST).
        namespaces = {"network": 2, "pid": 1}  # NODE, CONTAINER
        pod = {"metadata": {"name": name, "namespace": "default", "uid": uuid.uuid4().hex, "attempt": 1},
               "log_directory": str(self.root / "logs"),
               "linux": {"security_context": {"namespace_options": namespaces}}}
        ctr = {"metadata": {"name": "counter"}, "image": {"image": image}, "log_path": f"{name}.log",
               "envs": [{"key": k, "value": v} for k, v in {"PORT": str(port), **(env or {})}.items()],
               "linux": {"security_context": {"namespace_options": namespaces}}}
        pod_file, ctr_file = self.root / f"{name}-pod.json", self.root / f"{name}-ctr.json"
        pod_file.write_text(json.dumps(pod))
        ctr_file.write_text(json.dumps(ctr))
        return pod_file, ctr_file

    def remove_pods(self) -> None:
        self.crictl("rmp", "--all", "--force", check=False)


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"containerd exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            return
        time.sleep(0.1)
    raise AssertionError("containerd's socket did not appear within 30 s")


def _registry(root: Path) -> subprocess.Popen[bytes]:
    address = f"127.0.0.1:{free_port()}"
    (root / "registry.yml").write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                                       f"    rootdirectory: {root}/registry\nhttp:\n  addr: {address}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "registry.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.address = address  # type: ignore[attr-defined]
    hosts = root / "certs.d" / address
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(f'server = "http://{address}"\n[host."http://{address}"]\n'
                                      '  capabilities = ["pull", "resolve", "push"]\n')
    return proc


def _pause_image(root: Path) -> Path:
    """The sandbox image, built from the pause binary (setup-host) and saved as an OCI archive."""
    ctx = root / "pause"
    ctx.mkdir()
    shutil.copy(CRI_DIR / "bin" / "pause", ctx / "pause")
    (ctx / "Containerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
    subprocess.run(["podman", "build", "-q", "-t", PAUSE_IMAGE, "--label", "io.warmstart.test=cri", str(ctx)],
                   check=True, capture_output=True)
    archive = root / "pause.tar"
    subprocess.run(["podman", "save", "-q", "--format", "oci-archive", "-o", str(archive), PAUSE_IMAGE], check=True,
                   capture_output=True)
    return archive


@contextlib.contextmanager
def running_cri() -> Iterator[Cri]:
    missing = [t for t in ("containerd", "containerd-shim-runc-v2", "ctr", "crictl", "pause")
               if not (CRI_DIR / "bin" / t).is_file()]
    assert not missing, f"{', '.join(missing)} missing in {CRI_DIR}/bin: run scripts/setup-host"
    root = Path(tempfile.mkdtemp(prefix="ws-cri-", dir="/tmp"))  # short: unix socket paths are limited
    registry = _registry(root)
    (root / "config.toml").write_text(CONFIG.format(root=root, pause=PAUSE_IMAGE))
    (root / "crictl.yaml").write_text(f"runtime-endpoint: unix://{root}/c.sock\nimage-endpoint: unix://{root}/c.sock\n"
                                      "timeout: 60\n")
    log = (root / "containerd.log").open("wb")
    env = {**os.environ, "PATH": f"{CRI_DIR}/bin:{os.environ['PATH']}"}
    daemon = subprocess.Popen([str(CRI_DIR / "bin" / "containerd"), "--config", str(root / "config.toml")],
                              stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        _wait_socket(root / "c.sock", daemon, root / "containerd.log")
        subprocess.run([str(CRI_DIR / "bin" / "ctr"), "--address", f"{root}/c.sock", "-n", "k8s.io", "images",
                        "import", str(_pause_image(root))], check=True, capture_output=True)
        yield Cri(root, registry.address)  # type: ignore[attr-defined]
    finally:
        Cri(root, "").remove_pods()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        _stop_shims(root)
        registry.terminate()
        registry.wait(timeout=10)
        log.close()
        subprocess.run(["podman", "rmi", "-f", PAUSE_IMAGE], capture_output=True)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _stop_shims(root: Path) -> None:
    """The runc shims our containerd started (their command line names our socket): only those."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
            if cmdline[0].endswith(b"containerd-shim-runc-v2") and str(root).encode() in b" ".join(cmdline):
                os.kill(int(proc_dir.name), signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
