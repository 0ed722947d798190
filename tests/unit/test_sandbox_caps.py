"""The capabilities the sandbox adds for CRIU are the ones warmstart-init takes away from the app again: one list
in Python (what the container gets), one in Go (what exec-app drops), pinned equal here."""

from __future__ import annotations

import re
from pathlib import Path

from warmstart.core import sandbox

APP_GO = Path(__file__).resolve().parents[2] / "sandbox-init" / "app.go"


def test_the_init_drops_exactly_the_capabilities_the_sandbox_adds() -> None:
    source = APP_GO.read_text()
    block = source[source.index("var SandboxCaps"):source.index("}", source.index("var SandboxCaps"))]
    dropped = set(re.findall(r'"([A-Z_]+)": \d+', block))
    assert dropped == set(sandbox.CAP_ADD)
