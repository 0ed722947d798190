"""The names scripts and apps may import are pinned: a change here is a change of the public API."""

from __future__ import annotations

import importlib
import subprocess
import sys

import warmstart
import warmstart_helper


def test_the_library_exports_exactly_these_names_and_each_resolves() -> None:
    assert sorted(warmstart.__all__) == sorted([
        "__version__", "AppSpec", "load_spec_file", "SnapshotStore", "resolve_engine", "build_snapshot",
        "launch_instance", "TrustPolicy", "WarmstartError"])
    for name in warmstart.__all__:
        assert getattr(warmstart, name) is not None
    importlib.import_module("warmstart.snapshot.build")  # the submodules, once imported, must not hide the functions
    assert callable(warmstart.build_snapshot) and callable(warmstart.launch_instance)


def test_importing_warmstart_stays_cheap() -> None:
    """The CLI's restore path imports the package: the exports must not pull the library in."""
    code = "import sys, warmstart; print(sorted(m for m in sys.modules if m.startswith('warmstart.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_in_app_helper_exports_exactly_these_names() -> None:
    assert sorted(warmstart_helper.__all__) == [
        "import_secrets", "install", "register_after_restore", "register_before_checkpoint", "reseed", "trim"]
    for name in warmstart_helper.__all__:
        assert callable(getattr(warmstart_helper, name))
