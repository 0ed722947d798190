"""`warmstart doctor` on the set-up host, and with CRIU taken off PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.podman


def test_doctor_passes_on_the_set_up_host_including_a_real_smoke_checkpoint(cli: Cli) -> None:
    res = cli("doctor", "--smoke", "--json")
    assert res.returncode == 0, res.stdout
    checks = {c["name"]: c for c in res.json["checks"]}
    assert res.json["ok"] is True
    assert set(checks) == {"root", "engine", "runtime", "criu", "users", "ulimits", "path", "lazy", "post-copy",
                           "kubernetes", "cache", "smoke"}
    assert all(c["ok"] for c in checks.values())
    assert "runc" in checks["runtime"]["detail"] and "criu check" in checks["criu"]["detail"]
    assert "restored" in checks["smoke"]["detail"]
    assert checks["path"]["detail"].startswith("sandbox: new snapshots restore inside a fresh")
    assert checks["lazy"]["detail"].startswith("lazy restore available")  # this host's CRIU has uffd-noncoop
    assert checks["post-copy"]["detail"].startswith("post-copy migration available")  # setup-host's pipe size
    assert "containerd 2.1 (/opt/warmstart/cri/bin/containerd) restores checkpoint images" in \
        checks["kubernetes"]["detail"]  # the CRI runtime setup-host installs for the Kubernetes tests


def test_doctor_fails_with_a_fix_when_criu_is_not_on_path(cli: Cli) -> None:
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # podman stays reachable, the CRIU dirs do not
    res = cli("doctor", env={"PATH": path})
    assert res.returncode == 1
    line = next(ln for ln in res.stdout.splitlines() if " criu " in ln)
    assert line.startswith("FAIL") and "criu not found on PATH" in line
    fix = res.stdout.splitlines()[res.stdout.splitlines().index(line) + 1]
    assert "fix: run scripts/setup-host" in fix
    assert "ok   engine" in res.stdout  # the other checks still report


def test_doctor_reports_an_unusable_cache_dir(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("")
    res = cli("doctor", "--json", "--cache-dir", str(bad))
    assert res.returncode == 1
    cache = next(c for c in res.json["checks"] if c["name"] == "cache")
    assert not cache["ok"] and "not a directory" in cache["detail"] and cache["fix"]
    assert os.path.isfile(bad)
