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
    import sys

    from warmstart.cli.plain import committed, lean_run
    from warmstart.signals import install_sigterm_as_interrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    install_sigterm_as_interrupt()
    try:
        if sys.argv[1:2] == ["run"]:  # the restore path: no typer, no rich (see plain.py)
            code = lean_run(sys.argv[2:])
            if code is not None:
                raise SystemExit(code)
        from warmstart.cli.app import app

        app()
    except BrokenPipeError:  # stdout closed early (`| head`): nothing more to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # between commands' own handling (which cleans up) and the process edge
        if committed.done:
            raise SystemExit(0) from None
        os.write(2, b"warmstart: error: interrupted\n")
        raise SystemExit(130) from None
    finally:  # the command is over: an interrupt now would only garble the exit status
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
