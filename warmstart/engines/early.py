"""The engine query `warmstart run` starts before the rest of warmstart is imported.

Importing the modules a launch needs costs `run` about 30 ms, and its first engine call (podman's image id for the
"image changed since the snapshot?" check, about 28 ms) needs none of them: only the image name, which the app record
gives. So the lean entry starts that query first and the imports overlap with it; PodmanEngine.image_id then
takes the answer. Stdlib only, and nothing here decides anything: when the query cannot be started early (a spec
file, another engine, no record yet), it is made later, as before; an answer nobody took is reaped at exit.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
from pathlib import Path

from warmstart.core import layout, safefs
from warmstart.core.bounded import loads_json
from warmstart.engines.choice import requested_engine

PODMAN_IMAGE_ID = ("image", "inspect", "--format", "{{.Id}}")  # args of podman's image-id query (podman.py uses them)

_started: dict[tuple[str, str], subprocess.Popen[str]] = {}


def start_image_id(binary: str, image: str) -> None:
    """Start podman's image-id query for `image` (at most once per image)."""
    if (binary, image) in _started:
        return
    if not _started:
        atexit.register(_reap)
    # Its own session, as every engine call (podman.run_to_completion): a terminal's Ctrl-C does not reach it.
    _started[binary, image] = subprocess.Popen(
        [binary, *PODMAN_IMAGE_ID, image], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def take_image_id(binary: str, image: str, *, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """The finished query started for `image`, or None when none was started (the caller asks podman itself)."""
    proc = _started.pop((binary, image), None)
    if proc is None:
        return None
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()  # a read-only query: nothing is left half-done
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _reap() -> None:
    while _started:
        proc = _started.popitem()[1]
        proc.kill()
        proc.communicate()


def prefetch_for_run(app: str, *, cache_dir: Path | None, engine: str | None, spec_file: Path | None) -> None:
    """Start the image-id query of `app` (APP or APP:TAG) when the engine will be podman and the app record names
    the image. Anything unusual returns quietly: the launch then validates and reports as it always does."""
    if spec_file is not None:  # the spec file may name another image: parsing it here would cost what this saves
        return
    requested = requested_engine(engine)
    if requested[0] != "podman" if requested else shutil.which("podman") is None:  # auto-detection: podman first
        return
    name = app.partition(":")[0]
    if not layout.APP_NAME_RE.match(name):
        return
    root = cache_dir or layout.default_cache_dir()
    try:
        for directory in (root, root / layout.APPS_DIR):
            safefs.check_private_dir(directory)  # a record in a directory others can write is not read here
        record = loads_json(safefs.read_owned(layout.app_record(root, name), limit=1 << 20))
        image = record["spec"]["image"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if isinstance(image, str) and image and not image.startswith("-"):
        start_image_id("podman", image)
