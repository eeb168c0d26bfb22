"""Brokers under test: one contract, run on MemoryBroker, on fakeredis, on a real Redis and
on a real Redis Cluster (3 masters, 3 replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from hub.broker.base import Broker, Envelope, Kind
from hub.broker.memory import MemoryBroker
from hub.broker.redis import RedisBroker
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster_fixture
from tests.support.redis_server import RedisServer, redis_server, redis_server_fixture

__all__ = ["Backend", "Frames", "event", "redis_server", "shared_redis"]

KINDS = ["memory", "fakeredis", "redis", "cluster"]
WAIT = 5.0
"""Upper bound of every wait in these tests; reaching it fails the test, it is not a timing."""

shared_redis = redis_server_fixture("session", name="shared_redis")
shared_redis_cluster = redis_cluster_fixture("session", name="shared_redis_cluster")


def event(payload: str) -> Envelope:
    """A frame for clients that is not stored (like presence)."""
    return Envelope(Kind.EVENT, payload)


class Frames:
    """Records what a broker delivers to ``on_frame`` and waits (bounded) for it."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.envelopes: list[tuple[str, Envelope]] = []
        self._changed = asyncio.Event()
        self.reconnects = 0

    def __call__(self, topic: str, frame: Envelope) -> None:
        self.items.append((topic, frame.payload))
        self.envelopes.append((topic, frame))
        self._changed.set()

    async def on_reconnect(self) -> None:
        self.reconnects += 1
        self._changed.set()

    def payloads(self, topic: str) -> list[str]:
        """Payloads delivered for ``topic``, in order."""
        return [p for t, p in self.items if t == topic]

    async def until(self, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Wait until ``check()`` is truthy and return it; fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not (result := check()):
                self._changed.clear()
                await self._changed.wait()
            return result

    async def payload(self, topic: str, payload: str, timeout: float = WAIT) -> None:
        """Wait until ``payload`` was delivered for ``topic``."""
        await self.until(lambda: payload in self.payloads(topic), timeout)


class Backend:
    """Makes started brokers of one kind; brokers of a Redis kind share one store, like
    workers sharing one Redis (memory brokers are each their own world)."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self.url = url
        self.shared = kind != "memory"
        self._fake_server = fakeredis.FakeServer() if kind == "fakeredis" else None
        self._brokers: list[Broker] = []

    async def make(self, history_max: int = 1000) -> tuple[Broker, Frames]:
        """A started broker and the recorder of the frames it delivers."""
        broker: Broker
        if self.kind == "memory":
            broker = MemoryBroker(history_max=history_max)
        elif self.kind == "fakeredis":
            client = fakeredis.FakeAsyncRedis(server=self._fake_server, decode_responses=True)
            broker = RedisBroker(client, prefix="test", history_max=history_max)
        else:
            assert self.url is not None
            broker = RedisBroker.from_url(self.url, prefix="test", history_max=history_max)
        frames = Frames()
        await broker.start(frames, frames.on_reconnect)
        self._brokers.append(broker)
        return broker, frames

    async def lose_everything(self, broker: Broker) -> Broker:
        """Lose the stored state as a Redis restart without persistence would; returns the
        broker to carry on with (memory: a fresh one, since its state is the process).

        Ids are clock-based, so a new log's ids exceed the lost one's only once the clock has
        moved on; a real restart takes far longer than the pause here.
        """
        await asyncio.sleep(0.01)
        if self.kind == "memory":
            fresh, _frames = await self.make(history_max=broker._history_max)  # type: ignore[attr-defined]
            return fresh
        await self.client().flushall()
        return broker

    def client(self) -> Redis | RedisCluster:
        """A plain client on the same store, for inspecting or wrecking it."""
        if self.kind == "fakeredis":
            return fakeredis.FakeAsyncRedis(server=self._fake_server, decode_responses=True)
        assert self.url is not None
        if self.kind == "cluster":
            return cluster_client(self.url)
        return Redis.from_url(self.url, decode_responses=True)

    async def close(self) -> None:
        for broker in self._brokers:
            await broker.close()


def cluster_client(url: str) -> RedisCluster:
    """A redis-py cluster client on the nodes of a ``redis+cluster://`` URL."""
    seeds = [seed.rsplit(":", 1) for seed in url.split("://", 1)[1].split(",")]
    nodes = [ClusterNode(host, int(port)) for host, port in seeds]
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind: str = request.param
    url = None
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("shared_redis")
        if not server.running:
            server.start()
        url = server.url
    elif kind == "cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("shared_redis_cluster")
        url = nodes.url
    if url is not None:
        flusher = Backend(kind, url).client()
        await flusher.flushall()
        await flusher.aclose()
    backend = Backend(kind, url)
    try:
        yield backend
    finally:
        await backend.close()
