"""A snapshot's restore record on this host: consecutive failures and its circuit (the restore policy's state,
restore/policy.py). The store reads and writes it beside the snapshot (HEALTH_FILE); it is advice, never trusted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

FAILURES_TO_OPEN = 3  # restore failures of one snapshot in a row that open its circuit
COOLDOWN_SECONDS = 600.0  # how long an open circuit makes launches start cold without trying


@dataclass(frozen=True)
class Health:
    """A snapshot's restore record on this host (HEALTH_FILE in its directory)."""

    consecutive_failures: int = 0
    last_error: str = ""
    open_until: float = 0.0  # epoch seconds; 0: closed

    def circuit(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.open_until > now:
            return "open"
        return "half-open" if self.open_until else "closed"

    def after_failure(self, error: str, now: float | None = None) -> Health:
        now = time.time() if now is None else now
        failures = self.consecutive_failures + 1
        reopen = failures >= FAILURES_TO_OPEN
        return Health(failures, error[:500], now + COOLDOWN_SECONDS if reopen else self.open_until)

    def to_dict(self) -> dict[str, Any]:
        return {"consecutive_failures": self.consecutive_failures, "last_error": self.last_error,
                "open_until": self.open_until}

    @classmethod
    def from_raw(cls, raw: Any) -> Health:
        """Lenient: a health file is advice, so anything malformed reads as a clean record."""
        if not isinstance(raw, dict):
            return cls()
        failures, error, until = raw.get("consecutive_failures"), raw.get("last_error"), raw.get("open_until")
        # A breaker is never open for longer than one cool-down from now: a later (or huge) time was not ours.
        latest = time.time() + COOLDOWN_SECONDS
        opened = (float(until) if isinstance(until, (int, float)) and not isinstance(until, bool)
                  and 0 <= until <= latest else 0.0)
        return cls(failures if isinstance(failures, int) and 0 <= failures < 1 << 31 else 0,
                   error[:500] if isinstance(error, str) else "", opened)
