"""warmstart_helper in a real process: a failing after-restore hook is reported on stderr and never raised into
what the app's main thread was doing (the hooks run in a thread the signal wakes, not in the handler)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

APP = r"""
import os, signal, time
import warmstart_helper

ran = []

@warmstart_helper.register_after_restore
def broken() -> None:
    ran.append("broken")
    raise RuntimeError("hook exploded")

warmstart_helper.install()
os.kill(os.getpid(), signal.SIGUSR2)
total = 0
deadline = time.monotonic() + 5
while not ran and time.monotonic() < deadline:  # the app's own work, which must not see the hook's exception
    total += sum(range(1000))
time.sleep(0.2)
print("main thread finished", bool(ran), total > 0)
"""


def test_failing_after_restore_hook_does_not_reach_the_main_thread() -> None:
    proc = subprocess.run([sys.executable, "-c", APP], capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main thread finished True True"
    assert "warmstart_helper: after_restore hook failed" in proc.stderr and "hook exploded" in proc.stderr
