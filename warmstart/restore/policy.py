"""When `run` restores at all: only where the snapshot wins, and not while its restores keep failing.

- **Restore only where it wins.** A build makes trial cold starts exactly as `run --cold` makes them (a plain
  container) and as many trial restores as `run` makes them, interleaved, each timed from the engine call to the
  first answer on the published port as an outside client polls it (snapshot/trials.py OutsideClock; our own
  probe for exec and log probes), on the building host. A snapshot whose median restore was not at
  least MIN_GAIN faster than the median cold start (and by more than NOISE_SECONDS: below that the figures are
  measurement noise and restoring is the default) is skipped, cold start with the numbers in the reason, unless the
  app says `always_restore = true` (e.g. for its warmed JIT rather than its start time). Snapshots from before the
  trials (one `restored_ready_seconds` against the build's own cold boot under the init) are judged the old way.
- **Circuit breaker.** FAILURES_TO_OPEN restore failures of one snapshot in a row open its circuit: launches start
  cold without trying it for COOLDOWN_SECONDS; then one launch tries again (half-open) and a success closes it.
  The state is a small file in the snapshot's directory (cache/health.py, the store's `health`), shown by
  `cache inspect`.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from warmstart.cache.health import COOLDOWN_SECONDS, FAILURES_TO_OPEN, Health

__all__ = ["COOLDOWN_SECONDS", "FAILURES_TO_OPEN", "Health", "MIN_GAIN", "NOISE_SECONDS", "skip_reason",
           "trial_timings"]

MIN_GAIN = 0.9  # a restore must reach ready in at most 90 % of the cold start's time to be used
NOISE_SECONDS = 0.02  # differences below this are not judged: a launch's own jitter is larger


def skip_reason(ref: str, timings: dict[str, Any], health: Health, *, always_restore: bool,
                now: float | None = None) -> str:
    """Why `run` should not restore snapshot `ref` (a cold start is expected to be as fast, or its circuit is
    open); "" when it should."""
    if health.circuit(now) == "open":
        until = time.strftime("%H:%M:%S", time.localtime(health.open_until))
        return (f"snapshot {ref}: circuit open after {health.consecutive_failures} failed restores in a row (last: "
                f"{health.last_error}); starting cold without trying until {until}")
    cold = timings.get("cold_ready_seconds", timings.get("ready_seconds"))
    restored = timings.get("restored_ready_seconds")
    if always_restore or not _is_number(cold) or not _is_number(restored):
        return ""
    assert isinstance(cold, (int, float)) and isinstance(restored, (int, float))
    if restored > cold * MIN_GAIN + NOISE_SECONDS:
        trials = timings.get("cold_trials", 1)
        how = f"median of {int(trials)} trials each way" if _is_number(trials) and trials > 1 else "one trial"
        return (f"snapshot {ref} does not beat a cold start here: its trial restore was ready in {restored:.2f}s "
                f"against {cold:.2f}s cold ({how}; a restore needs at most {MIN_GAIN:.0%}); set always_restore = "
                "true to restore anyway")
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_timings(cold: list[float], restored: list[float]) -> dict[str, float]:
    """The manifest's `timings` entries for a build's trials: per kind the number of trials, their median (what
    `run` judges by), fastest and slowest; a kind with no trial has no median, and then `run` does not judge.
    (The manifest's timings are numbers only: its fixed shape.)"""
    out: dict[str, float] = {}
    for kind, values in (("cold", cold), ("restored", restored)):
        out[f"{kind}_trials"] = len(values)
        if values:
            out[f"{kind}_ready_seconds"] = round(statistics.median(values), 3)
            out[f"{kind}_fastest_seconds"] = round(min(values), 3)
            out[f"{kind}_slowest_seconds"] = round(max(values), 3)
    return out
