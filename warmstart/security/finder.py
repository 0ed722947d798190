"""Where byte strings occur in a file: the first step of the secret scan (secretenv.py), which then matches shapes
at these offsets only.

The scan runs over every page of a snapshot at build, push and import, and over a GiB of memory Python's `find`
takes one pass per string: 15 strings, 9.5 s here, most of a migration's push. warmstart-init's `find` verb
(sandbox-init/find.go, the static binary already on the host for the containers) makes one pass (1.2 s per GiB):
it is used when present; otherwise Python's search, whose results are the same (tests/unit/test_finder.py).
The needles go to it on stdin, hex-encoded: they include secret values, which no command line may carry.
"""

from __future__ import annotations

import heapq
import mmap
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from warmstart.core import sandbox


class _HelperFailed(Exception):
    """warmstart-init's `find` failed (an older binary without the verb, a read error): Python's search takes over
    from where it stopped."""


def occurrences(path: Path, needles: list[bytes]) -> Iterator[tuple[int, int]]:
    """(offset, needle index) for every occurrence of every needle in the file, by offset, then by index. A caller
    may stop early (the helper process is then ended)."""
    if not needles or path.stat().st_size == 0:
        return
    last = (-1, -1)
    if min(map(len, needles)) >= 2 and os.access(sandbox.INIT, os.X_OK):
        try:
            for hit in _with_init(path, needles):
                last = hit
                yield hit
            return
        except _HelperFailed:
            pass
    yield from (hit for hit in _with_python(path, needles) if hit > last)


def _with_python(path: Path, needles: list[bytes]) -> Iterator[tuple[int, int]]:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        live = [(at, i) for i, n in enumerate(needles) if (at := data.find(n)) >= 0]
        heapq.heapify(live)
        while live:
            at, i = live[0]
            yield at, i
            nxt = data.find(needles[i], at + 1)
            if nxt >= 0:
                heapq.heapreplace(live, (nxt, i))
            else:
                heapq.heappop(live)


def _with_init(path: Path, needles: list[bytes]) -> Iterator[tuple[int, int]]:
    proc = subprocess.Popen([str(sandbox.INIT), "find", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        try:
            proc.stdin.write("".join(f"{n.hex()}\n" for n in needles))
            proc.stdin.close()
        except BrokenPipeError as exc:  # it exited at once
            raise _HelperFailed from exc
        for line in proc.stdout:
            at, index = line.split()
            yield int(at), int(index)
        if proc.wait() != 0:
            raise _HelperFailed
    finally:  # stopped early, or failed: the helper is ours to end
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
