"""Signal discipline: SIGTERM behaves like Ctrl-C, and clean-up code cannot be interrupted half-way."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_sigterm_as_interrupt() -> None:
    """So `finally:` clean-up runs when a supervisor sends SIGTERM, exactly as for Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while removing what we created (children started here inherit the ignore)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


TRIGGERS = ("USR1", "USR2", "HUP", "QUIT", "WINCH")  # what `checkpoint --on-signal` may wait for


def trigger_signal(name: str) -> signal.Signals:
    """`--on-signal USR1` (or SIGUSR1): one of TRIGGERS, else UsageError (INT and TERM stay for ending the wait)."""
    from warmstart.errors import UsageError

    short = name.upper().removeprefix("SIG")
    if short not in TRIGGERS:
        raise UsageError(f"invalid --on-signal {name!r}: expected one of {', '.join(TRIGGERS)}")
    return signal.Signals[f"SIG{short}"]


def await_signal(sig: signal.Signals) -> None:
    """Block until `sig` arrives (it is held back meanwhile, so it cannot end the process by its default action);
    Ctrl-C and SIGTERM still end the wait as an interrupt."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    try:
        signal.sigwait({sig})
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
