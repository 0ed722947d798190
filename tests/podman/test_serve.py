"""`warmstart serve`: scale from zero against real podman + CRIU, through a real TCP front."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import JsonLines, build, corrupt_image, free_port, reseal, snapshot_holds_token

pytestmark = pytest.mark.podman


class Front(JsonLines):
    """A running `warmstart serve` process and its JSON event stream."""

    def __init__(self, cli: Cli, app: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        super().__init__(subprocess.Popen(
            cli.argv("serve", app, "--listen", f"127.0.0.1:{self.port}", "--json", *args), env=cli.env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
        self.wait_for("listening")

    def instances_started(self) -> list[str]:
        """The instances this front has started so far, oldest first (events already read)."""
        return [e["instance"] for e in self.seen if e["event"] == "started"]

    def get(self, path: str = "/") -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        while not self.events.empty():
            self.seen.append(self.events.get())
        return code


@pytest.fixture
def front_factory() -> Iterator[Any]:
    fronts: list[Front] = []

    def make(cli: Cli, app: str, *args: str) -> Front:
        fronts.append(Front(cli, app, *args))
        return fronts[-1]

    yield make
    for f in fronts:
        if f.proc.poll() is None:
            f.stop()


def _running(cli: Cli, app: str) -> list[str]:
    """Instances of the app that run it (a pre-started sandbox waiting in the pool does not)."""
    return [i["name"] for i in cli("ps", "--app", app, "--json").json["instances"] if i["mode"] != "pooled"]


def test_first_request_from_zero_is_served_by_a_restored_instance_which_idles_away(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    built = build(cli, owned_app)
    front = front_factory(cli, owned_app, "--idle", "2", "--pool", "0")
    assert containers_of(owned_app) == []  # zero instances until a request arrives (no pool asked for)
    status, body = front.get("/")
    token = json.loads(body)["boot_token"]
    assert status == 200 and snapshot_holds_token(Path(built["snapshot_path"]), token)
    started = front.wait_for("started")
    assert started["mode"] == "restored" and started["instances"] == 1
    stopped = front.wait_for("stopped", timeout=30)
    assert stopped["reason"].startswith("idle for")
    assert containers_of(owned_app) == []
    status, body = front.get("/")  # from zero again: restored again
    assert status == 200 and json.loads(body)["boot_token"] == token
    assert front.wait_for("started")["mode"] == "restored"
    assert front.stop() == 0
    assert [e["event"] for e in front.seen][-2:] == ["stopped", "shutdown"]
    assert containers_of(owned_app) == []


def test_pre_started_sandbox_serves_the_first_request_and_is_replaced(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    built = build(cli, owned_app)
    front = front_factory(cli, owned_app, "--idle", "60")  # the default pool: one pre-started sandbox
    pooled = front.wait_for("pooled")
    ps = cli("ps", "--app", owned_app, "--json").json["instances"]
    assert [(i["name"], i["mode"]) for i in ps] == [(pooled["instance"], "pooled")]  # visible, app not running
    assert _running(cli, owned_app) == []
    status, body = front.get("/")
    assert status == 200 and snapshot_holds_token(Path(built["snapshot_path"]), json.loads(body)["boot_token"])
    started = front.wait_for("started")
    assert started["instance"] == pooled["instance"] and started["mode"] == "restored"  # the pooled one
    replacement = front.wait_for("pooled")  # refilled after use
    assert replacement["instance"] != pooled["instance"]
    modes = {i["name"]: i["mode"] for i in cli("ps", "--app", owned_app, "--json").json["instances"]}
    assert modes == {pooled["instance"]: "restored", replacement["instance"]: "pooled"}
    assert front.stop() == 0
    assert containers_of(owned_app) == []
    assert list((cli.cache / "sandboxes").iterdir()) == []  # trigger FIFOs gone too


def test_instances_and_pool_of_a_killed_front_are_swept(cli: Cli, owned_app: str, front_factory: Any) -> None:
    build(cli, owned_app)
    first = front_factory(cli, owned_app)
    assert first.get("/")[0] == 200
    serving = first.wait_for("started")["instance"]  # an instance it started for that request
    orphan = first.wait_for("pooled")["instance"]  # and the sandbox it keeps ready for the next one
    first.proc.kill()
    first.proc.wait(timeout=30)
    assert {orphan, serving} <= set(containers_of(owned_app))
    second = front_factory(cli, owned_app)
    second.wait_for("pooled")
    assert orphan not in containers_of(owned_app) and serving not in containers_of(owned_app)
    assert second.stop() == 0
    assert containers_of(owned_app) == []


def test_twenty_concurrent_first_requests_start_exactly_one_instance(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    build(cli, owned_app)
    front = front_factory(cli, owned_app, "--max", "1", "--idle", "60")
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: front.get("/"), range(20)))
    assert [s for s, _ in results] == [200] * 20
    assert len({json.loads(b)["boot_token"] for _, b in results}) == 1
    assert front.stop() == 0
    assert [e["event"] for e in front.seen].count("started") == 1
    assert containers_of(owned_app) == []


def test_restore_failure_falls_back_cold_and_still_answers(cli: Cli, owned_app: str, front_factory: Any) -> None:
    built = build(cli, owned_app)
    corrupt_image(Path(built["snapshot_path"]), "inventory.img")
    reseal(Path(built["snapshot_path"]))
    front = front_factory(cli, owned_app)
    status, body = front.get("/")
    assert status == 200 and json.loads(body)["count"] == 2  # a fresh process: its probe + this request
    started = front.wait_for("started")
    assert started["mode"] == "cold" and "failed" in started["reason"]
    assert front.stop() == 0 and containers_of(owned_app) == []


def test_connections_that_cannot_be_served_in_time_get_503_not_a_hang(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    build(cli, owned_app, "-e", "STARTUP_DELAY=6", "--tag", "slow")
    subprocess.run(["rm", "-rf", str(cli.cache / "snapshots" / owned_app)], check=True)  # cold: takes 6 s
    front = front_factory(cli, owned_app, "--wait-timeout", "1")
    t = time.monotonic()
    status, body = front.get("/")
    assert status == 503 and b"no instance became ready in time" in body
    assert time.monotonic() - t < 10
    front.wait_for("started", timeout=60)
    assert front.get("/")[0] == 200
    assert front.stop() == 0 and containers_of(owned_app) == []


def test_min_warm_keeps_an_instance_ready_and_bad_options_are_refused(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    build(cli, owned_app)
    front = front_factory(cli, owned_app, "--min-warm", "1", "--idle", "1")
    assert front.wait_for("started")["mode"] == "restored"  # before any request
    time.sleep(2.5)
    assert len(_running(cli, owned_app)) == 1  # min-warm is not reaped when idle
    assert front.stop() == 0 and containers_of(owned_app) == []
    bad = cli("serve", owned_app, "--min-warm", "3", "--max", "2")
    assert bad.returncode == 2 and "--min-warm must be between 0 and --max" in bad.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = cli("serve", owned_app, "--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    taken.close()
    assert busy.returncode == 2 and "cannot listen on" in busy.stderr


def _scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_admin_endpoint_metrics_while_scaling_and_a_drain_on_sigterm(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    """/metrics scraped as the front scales from zero; SIGTERM with a request in flight: /healthz turns 503, the
    request still completes, then the instances are removed."""
    build(cli, owned_app)
    admin = free_port()
    front = front_factory(cli, owned_app, "--pool", "0", "--admin", f"127.0.0.1:{admin}", "--drain", "20")
    assert _scrape(admin, "/healthz") == (200, '{"status": "serving", "instances": 0, "pool": 0}')
    text = _scrape(admin, "/metrics")[1]
    assert _metric(text, 'warmstart_serve_instances{mode="restored"}') == 0
    assert _metric(text, 'warmstart_serve_starts_total{mode="restored"}') == 0

    assert front.get("/")[0] == 200  # from zero: a restore
    served = front.wait_for("served")  # the access log: one event per proxied connection
    assert served["first_byte_seconds"] > 0 and served["seconds"] >= served["first_byte_seconds"]
    text = _scrape(admin, "/metrics")[1]
    assert _metric(text, 'warmstart_serve_instances{mode="restored"}') == 1
    assert _metric(text, 'warmstart_serve_starts_total{mode="restored"}') == 1
    assert _metric(text, "warmstart_serve_connections_total") == 1
    assert _metric(text, "warmstart_serve_first_byte_seconds_count") == 1
    assert _metric(text, 'warmstart_serve_start_ready_seconds_count{mode="restored"}') == 1

    slow: dict[str, Any] = {}
    t = threading.Thread(target=lambda: slow.update(result=front.get("/slow?seconds=3")))
    t.start()
    deadline = time.monotonic() + 10
    while _metric(_scrape(admin, "/metrics")[1], "warmstart_serve_open_connections") < 1:
        assert time.monotonic() < deadline, "the slow request never reached the instance"
        time.sleep(0.05)
    front.proc.send_signal(signal.SIGTERM)
    front.wait_for("draining")
    assert _scrape(admin, "/healthz")[0] == 503
    t.join(timeout=30)
    assert slow["result"][0] == 200 and b'"slow": true' in slow["result"][1]  # finished, not cut off
    assert front.proc.wait(timeout=60) == 0
    front.wait_for("shutdown")
    assert containers_of(owned_app) == []


def _raw_get(port: int, path: str) -> str:
    """One HTTP request on its own connection: the status line, or what went wrong (never raises)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.split(b"\r\n", 1)[0].decode() if data else "closed without a reply"
    except OSError as exc:
        return f"error: {exc}"


def test_a_burst_and_an_instance_killed_mid_request_leave_no_connection_unanswered(
    cli: Cli, owned_app: str, front_factory: Any
) -> None:
    """200 concurrent connections against `--max 2` with one warm instance: each gets an HTTP answer (200, or 503
    with Retry-After), none a bare close. Then an instance is killed while it holds requests: those are sent
    again to the other instance (GET is idempotent) and answered."""
    build(cli, owned_app)
    front = front_factory(cli, owned_app, "--max", "2", "--min-warm", "2", "--concurrency", "5")
    while len([e for e in front.seen if e["event"] == "started"]) < 2:
        front.wait_for("started")
    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(lambda _: _raw_get(front.port, "/"), range(200)))
    assert set(statuses) <= {"HTTP/1.0 200 OK", "HTTP/1.1 503 Service Unavailable"}, set(statuses)
    assert statuses.count("HTTP/1.0 200 OK") >= 100

    with ThreadPoolExecutor(max_workers=10) as pool:
        slow = [pool.submit(_raw_get, front.port, "/slow?seconds=3") for _ in range(10)]
        time.sleep(1.0)  # both instances hold some of them now
        victim = front.instances_started()[0]
        subprocess.run(["podman", "kill", "--signal", "KILL", victim], check=True, capture_output=True)
        answers = [f.result() for f in slow]
    assert answers == ["HTTP/1.0 200 OK"] * 10, answers
    assert any(e["event"] == "retried" and e["instance"] == victim for e in front.seen + list(front.events.queue))
    assert front.stop() == 0
    assert containers_of(owned_app) == []
