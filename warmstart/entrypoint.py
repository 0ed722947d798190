"""`python3 -m warmstart.entrypoint ARGS` and `warmstart entrypoint ARGS`: a container that snapshots itself.

The work is done by `warmstart-init entrypoint` (sandbox-init/entrypoint.go), the same init that restores
`warmstart run`'s instances, so one mechanism serves build, run, serve and the entrypoint, and an image needs no
Python for it: use the init directly as ENTRYPOINT. This module only keeps the documented Python entry working,
by replacing itself with the init (same arguments, same PID, so the init is still the container's PID 1).
"""

from __future__ import annotations

import os
import sys

INIT = os.environ.get("WARMSTART_INIT", "/opt/warmstart/bin/warmstart-init")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        os.execv(INIT, [INIT, "entrypoint", *args])
    except OSError as exc:
        print(f"warmstart entrypoint: cannot run {INIT}: {exc.strerror} (copy or mount warmstart-init there, or "
              "set $WARMSTART_INIT)", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
