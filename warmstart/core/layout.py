"""Where things are in the cache, and which names may become paths there: the one home for these rules, shared by
the store and by `run`'s early start (warmstart.engines.early), which must not import the store. Stdlib only."""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_VAR = "WARMSTART_CACHE"
APPS_DIR = "apps"  # one app record per app: <name>.json, the spec of its last build
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # never "", "." or "..", never a "/": safe as a file name


def default_cache_dir() -> Path:
    """$WARMSTART_CACHE, else /var/lib/warmstart for root, else the user's cache dir."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if os.geteuid() == 0:
        return Path("/var/lib/warmstart")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "warmstart"


def app_record(root: Path, name: str) -> Path:
    """The app record's path; `name` must already match APP_NAME_RE."""
    return root / APPS_DIR / f"{name}.json"
