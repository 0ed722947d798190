"""The scale-from-zero front's Prometheus metrics (served on its admin address, `serve --admin`)."""

from __future__ import annotations


class Metrics:
    """The front's Prometheus metrics (prometheus_client, in a registry of its own): instances by mode, starts by
    mode with their time-to-ready, failed starts, connections, rejections, and time to the first byte."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        self.registry = CollectorRegistry()
        r = self.registry
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
        self.instances = Gauge("warmstart_serve_instances", "Running instances by mode", ["mode"], registry=r)
        self.pool = Gauge("warmstart_serve_pool_sandboxes", "Pre-started sandboxes waiting", registry=r)
        self.starts = Counter("warmstart_serve_starts", "Instances started, by mode", ["mode"], registry=r)
        self.start_seconds = Histogram("warmstart_serve_start_ready_seconds", "Time-to-ready of started instances",
                                       ["mode"], buckets=buckets, registry=r)
        self.start_failures = Counter("warmstart_serve_start_failures", "Failed instance starts", registry=r)
        self.connections = Counter("warmstart_serve_connections", "Connections accepted", registry=r)
        self.open = Gauge("warmstart_serve_open_connections", "Connections being proxied", registry=r)
        self.rejected = Counter("warmstart_serve_rejected", "Connections answered 503 or closed unserved", registry=r)
        self.first_byte = Histogram("warmstart_serve_first_byte_seconds", "From accepting a connection to the "
                                    "instance's first byte", buckets=buckets, registry=r)
        self.content_type = CONTENT_TYPE_LATEST
        for mode in ("restored", "cold"):
            self.instances.labels(mode).set(0)
            self.starts.labels(mode)

    def started(self, mode: str, ready_seconds: float) -> None:
        self.starts.labels(mode).inc()
        self.start_seconds.labels(mode).observe(ready_seconds)

    def render(self, *, modes: list[str], pool: int, open_connections: int) -> bytes:
        """The text exposition, with the gauges set from the front's state now (`modes`: one per instance)."""
        from prometheus_client import generate_latest

        for mode in ("restored", "cold"):
            self.instances.labels(mode).set(modes.count(mode))
        self.pool.set(pool)
        self.open.set(open_connections)
        data: bytes = generate_latest(self.registry)
        return data
