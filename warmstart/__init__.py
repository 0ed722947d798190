"""warmstart: start services from a warm CRIU snapshot instead of booting them cold.

The library surface (what scripts may import; pinned by tests/unit/test_public_surface.py). Names resolve on first
use, so `import warmstart` stays cheap for the CLI's restore path."""

from __future__ import annotations

# Nothing is imported here: the console script imports this package before warmstart.cli's main() can make an
# interrupt during start-up quiet, so the shorter that window, the rarer a KeyboardInterrupt traceback.
__version__ = "0.1.0"

_EXPORTS = {
    "AppSpec": "warmstart.core.spec",
    "load_spec_file": "warmstart.core.specfile:load",
    "SnapshotStore": "warmstart.cache.store",
    "resolve_engine": "warmstart.engines",
    "build_snapshot": "warmstart.snapshot.build:build",  # not `build`/`launch`: those names are the submodules
    "launch_instance": "warmstart.restore.launch:launch",
    "TrustPolicy": "warmstart.security.signing",
    "WarmstartError": "warmstart.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'warmstart' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    import importlib

    resolved: object = getattr(importlib.import_module(module), attr or name)
    return resolved
