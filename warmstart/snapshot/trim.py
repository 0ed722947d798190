"""Memory trimming before the checkpoint. Restore cost grows with resident memory, so a full GC (JVM) or
gc + malloc_trim (Python, through the in-app helper) can decide whether a restore beats a cold start."""

from __future__ import annotations

from warmstart.core.spec import TrimSpec
from warmstart.engines.base import Engine
from warmstart.errors import EngineError, HookError

# Every JVM in the container gets a full GC (System.gc through jcmd); G1 then returns free heap to the OS as
# MaxHeapFreeRatio allows. Exit 3: no jcmd (a JRE-only image), exit 4: no JVM found.
JVM_TRIM = (
    "sh", "-c",
    "command -v jcmd >/dev/null 2>&1 || exit 3; "
    "pids=$(jcmd -l 2>/dev/null | awk '$1 ~ /^[0-9]+$/ && $2 !~ /JCmd$/ {print $1}'); "
    '[ -n "$pids" ] || exit 4; '
    'for p in $pids; do jcmd "$p" GC.run >/dev/null || exit 5; done',
)
PYTHON_TRIM = ("python3", "-m", "warmstart_helper", "trim")


def trim(spec: TrimSpec, *, engine: Engine, container: str) -> dict[str, str]:
    """Run the configured trims; returns what each did. A JVM trim without jcmd in the image is skipped, not fatal."""
    done: dict[str, str] = {}
    if spec.jvm:
        result = _exec(engine, container, JVM_TRIM)
        if result == 3:
            done["jvm"] = "skipped: no jcmd in the image (install a JDK, or trim with a before_checkpoint hook)"
        elif result == 4:
            done["jvm"] = "skipped: no JVM found by jcmd -l"
        elif result != 0:
            raise HookError(f"JVM trim (jcmd GC.run) failed with exit code {result}")
        else:
            done["jvm"] = "full GC (jcmd GC.run)"
    if spec.python:
        result = _exec(engine, container, PYTHON_TRIM)
        if result != 0:
            raise HookError(f"Python trim through warmstart_helper failed with exit code {result}")
        done["python"] = "gc.collect + malloc_trim(0)"
    return done


def _exec(engine: Engine, container: str, command: tuple[str, ...]) -> int:
    try:
        return engine.exec(container=container, command=command, timeout=120).exit_code
    except EngineError as exc:
        raise HookError(f"trim could not run: {exc}") from exc
