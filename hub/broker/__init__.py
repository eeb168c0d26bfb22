"""Brokers chosen by URL: ``memory://`` (embedded), ``redis://`` or ``redis+cluster://`` (shared
by many workers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.broker.base import (
    AppendResult,
    Broker,
    BrokerError,
    Entry,
    InflightReply,
    Replay,
)

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = [
    "AppendResult",
    "Broker",
    "BrokerError",
    "Entry",
    "InflightReply",
    "Replay",
    "create_broker",
]


def create_broker(settings: Settings) -> Broker:
    """Build the broker the URL names; Redis is imported only when asked for."""
    url = settings.broker_url
    if url.startswith("memory://"):
        from hub.broker.memory import MemoryBroker

        return MemoryBroker(history_max=settings.history_max)
    from hub.broker.redis import RedisBroker

    return RedisBroker.from_url(
        url,
        prefix=settings.redis_prefix,
        history_max=settings.history_max,
        wait_replicas=settings.redis_wait_replicas,
    )
