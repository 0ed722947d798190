"""The command-line layer: typer and rich live here and nowhere else. May import every package."""

import os
import signal
import sys
from types import FrameType


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)  # nothing has been started yet: nothing to clean up, and no traceback to show


def _run_typer(app: object) -> int:
    """Run the typer app with click's own error printing off, so a usage error reads like every other error:
    one `warmstart: error:` line (and a JSON object with --json), exit code 2."""
    try:  # typer 0.2x vendors click; earlier releases use the click package
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as click_errors  # type: ignore[no-redef,import-not-found,unused-ignore]

    from warmstart.cli.plain import exit_code_for
    from warmstart.errors import UsageError

    try:
        code = app(standalone_mode=False)  # type: ignore[operator]
    except click_errors.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `warmstart` or `warmstart cache` alone: the help
            print(exc.format_message(), file=sys.stderr)
            return 2
        hint = f"`{exc.ctx.command_path} --help` lists the options" if exc.ctx is not None else ""
        return exit_code_for(UsageError(exc.format_message(), hint=hint), "--json" in sys.argv)
    except click_errors.Abort:
        raise KeyboardInterrupt from None
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console entry point. SIGINT/SIGTERM during start-up (importing the CLI takes a few hundred ms) end the
    process quietly; once the app runs, they become KeyboardInterrupt and every command cleans up after itself."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_quietly)
    import sys

    from warmstart.cli.plain import committed, lean_run
    from warmstart.core.signals import install_sigterm_as_interrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    install_sigterm_as_interrupt()
    try:
        if sys.argv[1:2] == ["run"]:  # the restore path: no typer, no rich (see plain.py)
            code = lean_run(sys.argv[2:])
            if code is not None:
                raise SystemExit(code)
        from warmstart.cli.app import app

        raise SystemExit(_run_typer(app))
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
