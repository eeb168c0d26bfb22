"""Prometheus metrics of one worker, in a registry of its own so several apps can share a process."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)


class Metrics:
    """Counters and gauges the hub updates on its hot paths; scraped at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.connections = Gauge(
            "hub_connections", "Open client connections on this worker", ["transport"], registry=r
        )
        self.subscriptions = Gauge(
            "hub_subscriptions", "Broker topics this worker subscribes to", registry=r
        )
        self.frames_in = Counter(
            "hub_frames_in_total", "Client frames received", ["type"], registry=r
        )
        self.frames_out = Counter(
            "hub_frames_out_total", "Frames delivered to local connections", registry=r
        )
        self.errors = Counter("hub_errors_total", "Error frames sent", ["code"], registry=r)
        self.messages = Counter("hub_messages_total", "Messages stored", registry=r)
        self.replies = Counter(
            "hub_replies_total", "Assistant replies ended", ["stop_reason"], registry=r
        )
        self.deltas = Counter("hub_deltas_total", "Reply deltas published", registry=r)
        self.reply_seconds = Histogram(
            "hub_reply_seconds", "Duration of assistant replies", registry=r
        )
        self.slow_closes = Counter(
            "hub_slow_consumer_closes_total", "Connections closed 4008 (queue overflow)", registry=r
        )
        self.taken_over = Counter(
            "hub_replies_taken_over_total", "Replies of dead workers continued here", registry=r
        )
        self.takeover_seconds = Histogram(
            "hub_takeover_seconds",
            "From a dead worker's last heartbeat to the first delta of its reply's continuation",
            buckets=(0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20),
            registry=r,
        )
        self.orphans_swept = Counter(
            "hub_orphans_swept_total", "Replies of dead workers claimed by this worker", registry=r
        )
        self.resumes = Counter(
            "hub_resumes_total", "Channels resumed on hello", ["result"], registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
