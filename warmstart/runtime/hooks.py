"""before_checkpoint / after_restore hooks: close what cannot survive a snapshot (pools, sockets to other hosts),
reopen and reseed after a restore. Each runs with its own timeout; the first failure stops the list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warmstart.core import jvmhelper
from warmstart.core.spec import AppSpec, HookSpec
from warmstart.engines.base import ContainerState, Engine
from warmstart.errors import EngineError, HookError
from warmstart.runtime.containers import published
from warmstart.runtime.probes import http_request

# The Python in-app helper (warmstart_helper.py): its CLI triggers the registered hooks over a local socket and
# waits for them; after a restore a signal is enough (cheaper than an exec on the restore path).
HELPER_SIGNAL = "SIGUSR2"


HELPER_BEFORE = HookSpec(kind="exec", command=("python3", "-m", "warmstart_helper", "before_checkpoint"), timeout=60)
HELPER_AFTER = HookSpec(kind="signal", signal=HELPER_SIGNAL)


def before_checkpoint_hooks(spec: AppSpec) -> tuple[HookSpec, ...]:
    """The app's own hooks, then the helpers' (they close what the app registered, last; the JVM's CRaC resources
    may stop the web server the app's HTTP hooks need)."""
    return (spec.before_checkpoint + ((HELPER_BEFORE,) if spec.python_helper else ())
            + ((jvmhelper.BEFORE_CHECKPOINT,) if spec.jvm_helper else ()))


def after_restore_hooks(spec: AppSpec, *, by_init: bool = False) -> tuple[HookSpec, ...]:
    """The helper first (secrets and reseeding before anything else runs), then the app's own hooks. `by_init`: a
    sandbox restore, whose init has already run the helpers' after-restore steps (init_env) and waited for them."""
    return ((HELPER_AFTER,) if spec.python_helper and not by_init else ()) + spec.after_restore


PYTHON_HELPER_VAR = "WARMSTART_PYTHON_HELPER"  # sandbox-init/crac.go PyHelperVar


def init_env(snapshot_spec: dict[str, Any]) -> dict[str, str]:
    """What a restoring sandbox's init needs to run the helpers' after-restore steps itself, right after CRIU's
    restore and before the instance counts as ready (no engine round trip, no race with the first request). It
    depends on how the snapshot was built (its manifest's spec)."""
    env = jvmhelper.restore_env(snapshot_spec)
    if snapshot_spec.get("python_helper") is True:
        env[PYTHON_HELPER_VAR] = "1"
    return env


def run_hooks(phase: str, hooks: tuple[HookSpec, ...], *, engine: Engine, state: ContainerState,
              env: Mapping[str, str] | None = None) -> list[str]:
    """Run hooks in order; returns their descriptions. Raises HookError naming the phase and the hook. `env`: what
    exec hooks get beside the container's environment (a restored sandbox's secrets, which that lacks)."""
    done = []
    for i, hook in enumerate(hooks):
        where = f"{phase} hook #{i + 1} ({hook.describe()})"
        try:
            if hook.kind == "exec":
                result = engine.exec(container=state.name, command=hook.command, timeout=hook.timeout, env=env)
                if result.exit_code != 0:
                    raise HookError(f"{where} exited with {result.exit_code}",
                                    details="\n".join(f"out: {ln}" for ln in result.output.splitlines()[-10:]))
            elif hook.kind == "signal":
                engine.kill(container=state.name, signal=hook.signal)
            else:
                assert hook.call is not None
                status, body = http_request(*published(state, hook.call.port), hook.call, timeout=hook.timeout)
                if not 200 <= status < 300:
                    raise HookError(f"{where} answered HTTP {status}: {body[:200].decode(errors='replace')}")
        except EngineError as exc:
            raise HookError(f"{where} failed: {exc}") from exc
        except OSError as exc:
            raise HookError(f"{where} failed: {exc}") from exc
        except Exception as exc:  # http.client.HTTPException, imported lazily (not on `run`'s import path)
            if type(exc).__module__ != "http.client":
                raise
            raise HookError(f"{where} failed: {exc}") from exc
        done.append(hook.describe())
    return done
