"""Benchmark harness: builds each example's snapshot once, and at the end of the session writes the side-by-side
results (Markdown table, JSON, PNG chart) to benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port  # noqa: F401  (one home for it; the benchmark modules import it from here)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WARMSTART = str(Path(sys.executable).with_name("warmstart"))
SESSION = f"bench-{uuid.uuid4().hex[:6]}"
COLLECTED: dict[str, dict[str, Any]] = {}  # app -> metric -> value


def record(app: str, **metrics: Any) -> None:
    COLLECTED.setdefault(app, {}).update(metrics)


def outside_ttr(argv: list[str], *, port: int, path: str = "/healthz", timeout: float = 180,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """benchmarks.outside.outside_ttr with the session label, failing loudly when the launch did not get ready."""
    from benchmarks.outside import outside_ttr as measure

    r = measure(argv, port=port, path=path, timeout=timeout, env={"WARMSTART_SESSION": SESSION, **(env or {})})
    if not r["ready"] or r["launch_exit"] != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: not ready (exit {r['launch_exit']}): {r['stderr'].strip()[-500:]}")
    return r


def warmstart(*args: str, cache: Path) -> dict[str, Any]:
    proc = subprocess.run([WARMSTART, *args, "--json"], capture_output=True, text=True,
                          env={**os.environ, "WARMSTART_CACHE": str(cache), "WARMSTART_SESSION": SESSION})
    if proc.returncode != 0:
        raise RuntimeError(f"warmstart {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("bench-cache")
    yield path
    for engine, rm in (("podman", ["rm", "--force", "--ignore", "-t", "0"]), ("/usr/bin/docker", ["rm", "-f"])):
        ids = subprocess.run([engine, "ps", "-aq", "--filter", f"label=io.warmstart.session={SESSION}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([engine, *rm, *ids], capture_output=True)


def _machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal"))) / 1024 / 1024
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    criu = subprocess.run(["criu", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, {podman}, "
            f"runc, CRIU {criu.split(':')[-1].strip()}")


def _s(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def _table() -> str:
    rows = ["| app | cold TTR | restored TTR (warmstart run) | restored / cold | raw podman restore TTR | "
            "raw / restored | CRIU restore in a started container (floor) | restored / floor | "
            "slowest client attempt, restored / raw | snapshot | first request cold / restored | "
            "p50 / p99 of first 100, cold | p50 / p99 of first 100, restored |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for app, m in COLLECTED.items():
        if "cold_ttr" not in m or "restored_ttr" not in m:
            continue
        raw, floor = m.get("raw_ttr"), m.get("floor_ttr")
        lat = "first_cold_ms" in m and "first_restored_ms" in m
        rows.append(
            f"| {app} | {_s(m['cold_ttr'])} | {_s(m['restored_ttr'])} | **{m['restored_ttr'] / m['cold_ttr']:.0%}** | "
            f"{_s(raw)} | {_ratio(raw, m['restored_ttr'])} | {_s(floor)} | {_ratio(m['restored_ttr'], floor)} | "
            f"{_s(m.get('slowest_restored_s'), 's', 3)} / {_s(m.get('slowest_raw_s'), 's', 3)} | "
            f"{_s(m['size_bytes'] / 1e6 if 'size_bytes' in m else None, 'MB', 0)} | "
            + (f"{m['first_cold_ms']:.1f} / {m['first_restored_ms']:.1f} ms | "
               f"{m['p50_cold_ms']:.2f} / {m['p99_cold_ms']:.2f} ms | "
               f"{m['p50_restored_ms']:.2f} / {m['p99_restored_ms']:.2f} ms |" if lat else "n/a | n/a | n/a |")
        )
    rows += [f"\n{app}: raw podman restore failed: {m['raw_error']}"
             for app, m in COLLECTED.items() if "raw_error" in m]
    return "\n".join(rows + _breakdown() + _serve_rows() + _lazy_rows() + _migration_rows() + _ha_rows()
                     + _cri_rows() + _cli_rows())


def _breakdown() -> list[str]:
    rows = ["", "Where a restore's time goes (medians): the launch command to the first 200 seen outside = the CLI "
             "until the engine call + the engine starting the container + CRIU restoring the process (as the init "
             "measures it) + the rest (first probe, first request).", "",
             "| app | outside TTR | warmstart's own ready_seconds | CLI before it (TTR - ready_seconds) | CRIU restore "
             "(init's measure) |", "|---|---|---|---|---|"]
    for app, m in COLLECTED.items():
        if "restored_ttr" in m and "restored_ready_seconds" in m:
            rows.append(f"| {app} | {_s(m['restored_ttr'])} | {_s(m['restored_ready_seconds'])} | "
                        f"{_s(m['restored_ttr'] - m['restored_ready_seconds'])} | "
                        f"{_s(m.get('criu_restore_s'), 's', 3)} |")
    return rows


def _serve_rows() -> list[str]:
    extra = ["", "| app | serve: request-to-first-byte from zero, pre-started sandbox (default) | from zero, "
             "--pool 0 | from zero, cold | build | checkpoint |", "|---|---|---|---|---|---|"]
    for app, m in COLLECTED.items():
        if "serve_first_byte_restored" in m or "checkpoint_seconds" in m:
            extra.append(f"| {app} | {_s(m.get('serve_first_byte_pooled'), 's', 3)} | "
                         f"{_s(m.get('serve_first_byte_restored'))} | "
                         f"{_s(m.get('serve_first_byte_cold'))} | {m.get('build_seconds', 0):.1f} s | "
                         f"{_s(m.get('checkpoint_seconds'))} |")
    return extra if len(extra) > 3 else []


def _lazy_rows() -> list[str]:
    extra: list[str] = []
    sizes = [(app, m) for app, m in COLLECTED.items() if app.endswith(" MiB") and "lazy_ttr" in m and "eager_ttr" in m]
    if sizes:
        extra += ["", "Lazy restore against memory size (the counter with that much random memory and a 16 MiB hot "
                  "buffer every request reads; working set recorded at build time and restored up front, the rest "
                  "streamed). Medians of the rounds; first / p50 / p99 of the 100 requests right after each launch.",
                  "", "| memory | working set | TTR lazy | TTR eager | lazy / eager | lazy: first / p50 / p99 | "
                  "eager: first / p50 / p99 |", "|---|---|---|---|---|---|---|"]
        for app, m in sizes:
            ws = m.get("working_set_bytes")
            extra.append(
                f"| {app} | {_s(ws / 2**20 if ws else None, 'MiB', 1)} | {_s(m['lazy_ttr'])} | {_s(m['eager_ttr'])} | "
                f"{m['lazy_ttr'] / m['eager_ttr']:.0%} | {m['lazy_first_ms']:.1f} / {m['lazy_p50_ms']:.1f} / "
                f"{m['lazy_p99_ms']:.1f} ms | {m['eager_first_ms']:.1f} / {m['eager_p50_ms']:.1f} / "
                f"{m['eager_p99_ms']:.1f} ms |")
    return extra


def _migration_rows() -> list[str]:
    extra: list[str] = []
    moves = [(app, m) for app, m in COLLECTED.items() if app.startswith("migrate ") and "downtime_s" in m]
    if moves:
        extra += ["", "Migration through a local registry to a second podman storage and cache, stop-and-copy and "
                  "post-copy (two instances of one build, in one run): downtime as a client polling every 5 ms sees "
                  "it (last answer from the source to the first from the destination), and the phases as `migrate` "
                  "reports them. Post-copy's stream runs after the destination answers.", "",
                  "| service | downtime, stop-and-copy | downtime, post-copy | post / stop | stop-and-copy: checkpoint "
                  "/ push / destination | post-copy: checkpoint / prepare / push / destination; then stream | "
                  "longest gap after the destination's first answer, stop-and-copy / post-copy |",
                  "|---|---|---|---|---|---|---|"]
        for app, m in moves:
            post = m.get("post_copy_downtime_s")
            ratio = f"{post / m['downtime_s']:.0%}" if post else ""
            extra.append(
                f"| {app[len('migrate '):]} | {_s(m['downtime_s'])} | {_s(post)} | {ratio} | "
                f"{_s(m.get('checkpoint_s'))} / {_s(m.get('push_s'))} / {_s(m.get('destination_s'))} | "
                f"{_s(m.get('post_copy_checkpoint_s'))} / {_s(m.get('post_copy_prepare_s'))} / "
                f"{_s(m.get('post_copy_push_s'))} / {_s(m.get('post_copy_destination_s'))}; "
                f"{_s(m.get('post_copy_stream_s'))} | "
                f"{_s(m.get('worst_gap_after_s'))} / {_s(m.get('post_copy_worst_gap_after_s'))} |")
    fronts = [(app, m) for app, m in COLLECTED.items() if app.startswith("migrate ") and "front_failed" in m]
    if fronts:
        extra += ["", "Migration with and without the front (one build, in one run): a client requesting every 5 ms "
                  "with a 30 s timeout, on the published port during `warmstart migrate` (stop-and-copy), and "
                  "through `serve` during POST /migrate, stop-and-copy and `--migrate-post-copy` (the front holds "
                  "what arrives meanwhile and replays what the freeze cut). The phases are the direct migration's "
                  "(`migrate --json`): CRIU's dump (the freeze until the last page is written), the checkpoint into "
                  "the cache that includes it, push, pull (with the destination's start-up), restore.", "",
                  "| service | failed requests, direct / front / front post-copy | longest time without an answer, "
                  "direct / front / front post-copy | held (front's report), stop-and-copy / post-copy | direct: "
                  "dump / checkpoint / push / pull / restore |", "|---|---|---|---|---|"]
        for app, m in fronts:
            phases = " / ".join(_s(m.get(f"direct_{k}_s")) for k in ("dump", "checkpoint", "push", "pull", "restore"))
            extra.append(f"| {app[len('migrate '):]} | {m['direct_failed']} of {m['direct_requests']} / "
                         f"{m['front_failed']} of {m['front_requests']} / {m.get('front_post_failed', '')} of "
                         f"{m.get('front_post_requests', '')} | {_s(m['direct_gap_s'])} / {_s(m['front_gap_s'])} / "
                         f"{_s(m.get('front_post_gap_s'))} | {_s(m['front_held_s'])} / "
                         f"{_s(m.get('front_post_held_s'))} | {phases} |")
    return extra


def _ha_rows() -> list[str]:
    runs = [(app, m) for app, m in COLLECTED.items() if app.startswith("ha ") and "recovery_s" in m]
    if not runs:
        return []
    rows = ["", "High availability (`run --restart on-failure --checkpoint-every`), in one run: how long a periodic "
            "checkpoint keeps the app frozen (CRIU's stats-dump) and takes in all, and, after a `kill -9` of the app, "
            "the time from the kill to the first good answer a client polling every 10 ms sees, beside a cold "
            "restart's time-to-ready (`run --cold`, outside client) of the same service.", "",
            "| service | frozen per checkpoint | checkpoint | recovery (kill to first answer) | cold restart TTR | "
            "recovery / cold |", "|---|---|---|---|---|---|"]
    for app, m in runs:
        rows.append(f"| {app[len('ha '):]} | {_s(m.get('frozen_s'), 's', 3)} | {_s(m.get('checkpoint_s'))} | "
                    f"{_s(m['recovery_s'])} | {_s(m.get('cold_ttr'))} | "
                    f"{_ratio(m['recovery_s'], m.get('cold_ttr')) if m.get('cold_ttr') else 'n/a'} |")
    return rows


def _cri_rows() -> list[str]:
    runs = [(app, m) for app, m in COLLECTED.items() if app.startswith("cri ") and "cri_cold_ttr" in m]
    if not runs:
        return []
    rows = ["", "Kubernetes' checkpoint-image path (`cache import` of a CRI checkpoint, `cache export "
            "--checkpoint-image --push`), in one run: a pod started by containerd 2.1's CRI (crictl: run the "
            "sandbox, create, start) from the checkpoint image, beside the same service's cold start through the "
            "same runtime, polled from outside; images already on the node.", "",
            "| service | cold through CRI | restored through CRI | restored / cold | CRI checkpoint | archive |",
            "|---|---|---|---|---|---|"]
    for app, m in runs:
        rows.append(f"| {app[len('cri '):]} | {_s(m['cri_cold_ttr'])} | {_s(m['cri_restored_ttr'])} | "
                    f"**{_ratio(m['cri_restored_ttr'], m['cri_cold_ttr'])}** | {_s(m.get('cri_checkpoint_s'))} | "
                    f"{_s(m.get('cri_checkpoint_mb'), 'MB', 0)} |")
    return rows


def _cli_rows() -> list[str]:
    cli = COLLECTED.get("cli", {})
    if "first_engine_call_ms" not in cli:
        return []
    return ["", f"`warmstart run`, exec to its first engine call: {cli['first_engine_call_ms']:.1f} ms "
            f"(median of 21; a bare `python -c pass` takes {cli['bare_python_ms']:.1f} ms here)."]


def _chart(path: Path, stamp: str) -> None:
    """Two panels a reader understands at a glance: time to ready per app and launch path, with the restored/cold
    ratio over each app and "n/a" where a path could not be measured (not a silent gap); and the first request's
    latency cold vs restored (the warm-JIT effect). Machine and date in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apps = [a for a, m in COLLECTED.items() if "cold_ttr" in m and "restored_ttr" in m]
    series = [("cold", "cold_ttr", "#c0504d"), ("raw podman restore --import", "raw_ttr", "#9bbb59"),
              ("warmstart run (restored)", "restored_ttr", "#4f81bd"),
              ("CRIU restore in a started container (floor)", "floor_ttr", "#8064a2")]
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / len(series)
    for i, (label, key, colour) in enumerate(series):
        xs = [x + i * width for x, a in enumerate(apps) if key in COLLECTED[a]]
        values = [COLLECTED[a][key] for a in apps if key in COLLECTED[a]]
        bars = ax.bar(xs, values, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f s", fontsize=7)
        for x, a in enumerate(apps):
            if key not in COLLECTED[a]:
                ax.text(x + i * width, 0.02, "n/a", ha="center", va="bottom", fontsize=7, color=colour, rotation=90)
    top = max((COLLECTED[a]["cold_ttr"] for a in apps), default=1.0)
    for x, a in enumerate(apps):
        ratio = COLLECTED[a]["restored_ttr"] / COLLECTED[a]["cold_ttr"]
        ax.text(x + 1.5 * width, top * 1.06, f"restored:\n{ratio:.0%} of cold", ha="center", fontsize=8,
                fontweight="bold")
    ax.set_ylim(0, top * 1.25)
    ax.set_xticks([x + 1.5 * width for x in range(len(apps))], [a.replace(" (", "\n(") for a in apps], fontsize=8)
    ax.set_ylabel("time to ready (s), seen by an outside client")
    ax.set_title("Launch command to first HTTP 200 polled from outside (median of rounds, one instance at a time)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 0.84))
    first = [a for a in apps if "first_cold_ms" in COLLECTED[a] and "first_restored_ms" in COLLECTED[a]]
    ys = range(len(first))
    lat.barh([y + 0.2 for y in ys], [COLLECTED[a]["first_cold_ms"] for a in first], 0.4, color="#c0504d",
             label="cold")
    lat.barh([y - 0.2 for y in ys], [COLLECTED[a]["first_restored_ms"] for a in first], 0.4, color="#4f81bd",
             label="restored")
    for y, a in zip(ys, first, strict=True):
        lat.text(COLLECTED[a]["first_cold_ms"], y + 0.2, f" {COLLECTED[a]['first_cold_ms']:.1f} ms", va="center",
                 fontsize=7)
        lat.text(COLLECTED[a]["first_restored_ms"], y - 0.2, f" {COLLECTED[a]['first_restored_ms']:.1f} ms",
                 va="center", fontsize=7)
    lat.set_yticks(list(ys), first, fontsize=8)
    lat.set_xlabel("first request after ready (ms)")
    lat.set_title("First request after ready: restored JVMs are JIT-warm", fontsize=9)
    lat.legend(fontsize=7)
    fig.suptitle(f"last run {stamp} (apps not in that run keep their earlier numbers), {_machine()}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not COLLECTED:
        return
    RESULTS.mkdir(exist_ok=True)
    # A run of some benchmarks keeps what others measured before (each comparison is still taken side by side
    # within the run that measured it): metrics measured now replace the old ones, per app.
    try:
        previous = json.loads((RESULTS / "latest.json").read_text()).get("apps", {})
    except (OSError, ValueError):
        previous = {}
    for app, metrics in previous.items():
        COLLECTED[app] = {**metrics, **COLLECTED.get(app, {})}
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "latest.json").write_text(json.dumps({"measured": stamp, "machine": _machine(),
                                                     "apps": COLLECTED}, indent=2) + "\n")
    md = (f"# Startup benchmarks\n\nMeasured {stamp} on {_machine()}.\n"
          "TTR = time to ready: from the launch command to the first HTTP 200 seen by a client polling the published "
          "port from outside (median of the rounds). "
          "All variants of an app were measured in one run, one instance at a time.\n\n" + _table() + "\n")
    (RESULTS / "latest.md").write_text(md)
    try:
        _chart(RESULTS / "latest.png", stamp)
    except ImportError:
        pass
    readme = ROOT / "docs" / "benchmarks.md"
    block = (f"<!-- bench:start -->\nLatest run ({stamp}, {_machine()}):\n\n{_table()}\n\n"
             "![cold vs restored](../benchmarks/results/latest.png)\n<!-- bench:end -->")
    text = readme.read_text()
    if "<!-- bench:start -->" in text:
        start, end = text.index("<!-- bench:start -->"), text.index("<!-- bench:end -->") + len("<!-- bench:end -->")
        readme.write_text(text[:start] + block + text[end:])
