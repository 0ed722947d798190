"""Kubernetes' checkpoint-image path (#26): time-to-ready of a pod restored by a CRI runtime (containerd 2.1, driven
by crictl as a kubelet would: run the sandbox, create, start) from warmstart's checkpoint image, beside the same
service's cold start through the same runtime, polled from outside, alternated in one run. Images are pulled onto
the node beforehand for both (a pull is the network's time, not the runtime's)."""

from __future__ import annotations

import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.conftest import outside_ttr, record, warmstart
from tests.helpers import free_port
from tests.podman.cri import running_cri

SERVICES = {  # name -> (image, warm-up paths before the checkpoint)
    "counter": ("localhost/warmstart-example-counter:latest", ["/"]),
    "py-model": ("localhost/warmstart-example-py-model:latest", ["/predict?row=1", "/predict?row=2", "/stats"]),
}
ROUNDS = 3


def _ready(port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never answered /healthz")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_cri_restore_from_checkpoint_image_vs_cold(service: str, cache: Path, tmp_path: Path) -> None:
    image, warm = SERVICES[service]
    with running_cri() as cri:
        base = f"{cri.registry}/{service}:1"
        subprocess.run(["podman", "push", "-q", "--tls-verify=false", image, base], check=True, capture_output=True)
        cri.crictl("pull", base, timeout=600)
        port = free_port()
        ctr = cri.run_pod(service, base, port=port)
        _ready(port)
        for path in warm * 20:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read()
        archive = tmp_path / "checkpoint.tar"
        started = time.monotonic()
        cri.crictl("checkpoint", f"--export={archive}", ctr, timeout=600)
        checkpoint_s = time.monotonic() - started
        cri.remove_pods()
        warmstart("cache", "import", str(archive), "--as", f"cri-{service}:bench", cache=cache)
        ckpt = f"{cri.registry}/{service}-checkpoint:bench"
        warmstart("cache", "export", f"cri-{service}:bench", "--checkpoint-image", ckpt, "--push", cache=cache)
        cri.crictl("pull", ckpt, timeout=600)
        cold, restored = [], []
        for _ in range(ROUNDS):
            for kind, runs, img in (("cold", cold, base), ("restored", restored, ckpt)):
                r = outside_ttr(cri.launch_argv(f"{service}-{kind}", img, port=port), port=port)
                runs.append(r["ttr_s"])
                cri.remove_pods()
        record(f"cri {service}", cri_cold_ttr=statistics.median(cold),
               cri_restored_ttr=statistics.median(restored), cri_checkpoint_s=round(checkpoint_s, 2),
               cri_checkpoint_mb=round(archive.stat().st_size / 1e6, 1))
