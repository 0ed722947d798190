"""Lazy restore against snapshot size (#12): the counter with 100, 500 and 1024 MiB of random memory and a 16 MiB
hot buffer that every request reads, restored lazily (working set up front, the rest streamed by CRIU's page
daemon) and eagerly, side by side in one run. Time-to-ready is the outside client's (from the launch command to the
first 200); after each launch, the first 100 requests' latencies show where lazy pages move the cost (to first
touch, unless the working set covers it)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import WARMSTART, outside_ttr, record, warmstart
from benchmarks.test_startup import ROUNDS, _get, _stop
from tests.helpers import ballast_spec, free_port

SIZES = (100, 500, 1024)

@pytest.fixture(scope="module", params=SIZES)
def sized(request: pytest.FixtureRequest, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    size = request.param
    name = f"ballast{size}"
    specs = {}
    for lazy in (True, False):  # one snapshot: lazy_pages is a restore-time choice, not part of the cache key
        specs[lazy] = ballast_spec(tmp_path_factory.mktemp(f"{name}-{lazy}") / "warmstart.toml", name, size=size,
                                   lazy=lazy)
    built = warmstart("build", "--name", name, "-f", str(specs[True]), "--force", cache=cache)
    record(f"{size} MiB", size_bytes=built["size_bytes"], working_set_bytes=built["working_set_bytes"])
    return {"name": name, "size": size, "specs": specs}


@pytest.mark.parametrize("how", ["lazy", "eager"])
def test_restore_by_size(sized: dict[str, Any], cache: Path, how: str) -> None:
    ttrs, firsts, p50s, p99s = [], [], [], []
    for _ in range(ROUNDS):
        port = free_port()
        argv = [WARMSTART, "run", sized["name"], "-f", str(sized["specs"][how == "lazy"]), "-p",
                f"127.0.0.1:{port}:8080", "--json"]
        result = outside_ttr(argv, port=port, env={"WARMSTART_CACHE": str(cache)})
        latencies = [_get(f"127.0.0.1:{port}", "/") for _ in range(100)]
        _stop(cache, json.loads(result["stdout"])["name"])
        ttrs.append(result["ttr_s"])
        firsts.append(latencies[0])
        p50s.append(statistics.median(latencies))
        p99s.append(sorted(latencies)[98])
    record(f"{sized['size']} MiB", **{f"{how}_ttr": statistics.median(ttrs),
                                      f"{how}_first_ms": statistics.median(firsts),
                                      f"{how}_p50_ms": statistics.median(p50s),
                                      f"{how}_p99_ms": statistics.median(p99s)})
