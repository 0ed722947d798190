"""The command-line layer: typer and rich live here and nowhere else."""

import os
import signal
from types import FrameType


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)  # nothing has been started yet: nothing to clean up, and no traceback to show


def main() -> None:
    """Console entry point. SIGINT/SIGTERM during start-up (importing the CLI takes a few hundred ms) end the
    process quietly; once the app runs, they become KeyboardInterrupt and every command cleans up after itself."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_quietly)
    from warmstart.cli.app import main as run

    from warmstart.cli.output import committed

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run()
    except KeyboardInterrupt:  # between commands' own handling (which cleans up) and the process edge
        if committed.done:
            raise SystemExit(0) from None
        os.write(2, b"warmstart: error: interrupted\n")
        raise SystemExit(130) from None
    finally:  # the command is over: an interrupt now would only garble the exit status
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
