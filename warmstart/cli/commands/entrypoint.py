from __future__ import annotations

from typing import Annotated

import typer


def entrypoint(
    args: Annotated[
        list[str], typer.Argument(help="[--snapshot-dir DIR] [--ready-http PATH | --ready-tcp] [--port P] -- CMD ...")
    ],
) -> None:
    """Container ENTRYPOINT: restore from the snapshot dir, or boot cold and snapshot into it (runs
    warmstart-init entrypoint, which images can also use directly, without Python)."""
    from warmstart.entrypoint import main

    raise typer.Exit(main(args))
