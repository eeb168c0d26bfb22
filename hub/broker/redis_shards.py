"""Sharded pub/sub over a Redis Cluster, for the broker's link.

``ShardedPubSub`` is one logical pub/sub connection made of one SSUBSCRIBE connection per
shard that owns a subscribed channel, so a frame travels only within its shard (classic
PUBLISH is copied to every node of a cluster). ``PubSubLink`` drives it like a single
connection: any shard failing (connection lost, a PING unanswered, MOVED, or a slot taken
away, which Redis announces with an unasked ``sunsubscribe``) fails the whole link, which is
rebuilt on a fresh view of the cluster and followed by the usual catch-up. redis-py's own
``ClusterPubSub`` only follows a moved slot when some other command happens to refresh the
topology, and says nothing about frames lost meanwhile (notes in README, "Scale-out").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

NodeClient = Callable[[str, int], Redis]
"""Makes a plain client for one node (host, port), for its pub/sub connection."""


class ShardLost(ConnectionError):
    """One shard's pub/sub connection failed or lost a subscription: rebuild the link."""


@dataclass(eq=False)
class _Shard:
    """The pub/sub connection to one master and the task reading it."""

    name: str
    client: Redis
    pubsub: PubSub
    channels: set[str] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None
    ping_sent: float | None = None


class ShardedPubSub:
    """One logical pub/sub connection over every shard that owns a subscribed channel.

    Speaks ``PubSubConnection`` with classic names (``subscribe``, messages of type
    ``message``) while sending SSUBSCRIBE/SUNSUBSCRIBE, one call per slot as Redis requires.
    """

    def __init__(self, cluster: RedisCluster, node_client: NodeClient, ping_timeout: float):
        self._cluster = cluster
        self._node_client = node_client
        self._ping_timeout = ping_timeout
        self._shards: dict[str, _Shard] = {}
        self._owner: dict[str, _Shard] = {}
        self._leaving: set[str] = set()
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()

    async def connect(self) -> None:
        """Read the slot map afresh: after a failover or a moved slot the old one is stale."""
        await self._cluster.initialize()  # the first time: the client's own setup as well
        await self._cluster.nodes_manager.initialize()

    async def subscribe(self, *names: str) -> None:
        """SSUBSCRIBE each name on the master owning its slot, one call per slot."""
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(self._cluster.keyslot(name), []).append(name)
        for slot, group in by_slot.items():
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            shard = await self._shard(node.host, int(node.port))
            for name in group:
                self._owner[name] = shard
                shard.channels.add(name)
                self._leaving.discard(name)
            await shard.pubsub.ssubscribe(*group)

    async def unsubscribe(self, *names: str) -> None:
        """SUNSUBSCRIBE on the shard that holds each name; a shard left with none is closed."""
        for name in names:
            shard = self._owner.pop(name, None)
            if shard is None:
                continue
            shard.channels.discard(name)
            if shard.channels:
                self._leaving.add(name)
                await shard.pubsub.sunsubscribe(name)
            else:
                await self._close_shard(shard)

    async def ping(self, message: str) -> None:
        """PING every shard; one that stays silent ``ping_timeout`` s fails ``get_message``."""
        if not self._shards:  # nothing to watch: answer for the (empty) link at once
            self._queue.put_nowait({"type": "pong", "channel": None, "data": message})
            return
        now = asyncio.get_running_loop().time()
        for shard in list(self._shards.values()):
            if shard.ping_sent is None:
                shard.ping_sent = now
            await shard.pubsub.ping(message)

    async def get_message(self, *, timeout: float) -> dict[str, Any] | None:
        """The next message of any shard, None after ``timeout`` s; a shard's failure raises."""
        self._check_pings()
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that comes as
            # a message arrives, and the link's listener would never stop.
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            self._check_pings()
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        for shard in list(self._shards.values()):
            await self._close_shard(shard)
        self._owner.clear()

    def shards(self) -> dict[str, set[str]]:
        """Channels per shard (``host:port``), for tests and metrics."""
        return {name: set(shard.channels) for name, shard in self._shards.items()}

    # -- internals -----------------------------------------------------------------------
    async def _shard(self, host: str, port: int) -> _Shard:
        name = f"{host}:{port}"
        shard = self._shards.get(name)
        if shard is None:
            client = self._node_client(host, port)
            pubsub = client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()
                raise
            shard = _Shard(name, client, pubsub)
            shard.reader = asyncio.create_task(self._read(shard), name=f"redis-shard-{name}")
            self._shards[name] = shard
        return shard

    async def _close_shard(self, shard: _Shard) -> None:
        self._shards.pop(shard.name, None)
        for name in shard.channels:
            if self._owner.get(name) is shard:
                del self._owner[name]
        if shard.reader is not None:
            shard.reader.cancel()
            await asyncio.wait([shard.reader], timeout=self._ping_timeout)
        with contextlib.suppress(Exception):
            await shard.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await shard.client.aclose()

    async def _read(self, shard: _Shard) -> None:
        """Move one shard's messages to the common queue; its failure goes there too."""
        try:
            while True:
                message = await shard.pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                shard.ping_sent = None  # any byte from the shard shows it is alive
                translated = self._translate(shard, message)
                if translated is not None:
                    self._queue.put_nowait(translated)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            self._queue.put_nowait(ShardLost(f"shard {shard.name}: {reason}"))

    def _translate(self, shard: _Shard, message: dict[str, Any]) -> dict[str, Any] | None:
        kind, channel = message["type"], message.get("channel")
        if kind == "smessage":
            return {"type": "message", "channel": channel, "data": message["data"]}
        if kind == "ssubscribe":
            return {"type": "subscribe", "channel": channel, "data": message["data"]}
        if kind == "sunsubscribe":
            if channel in self._leaving:
                self._leaving.discard(channel)
                return None
            # Redis drops the subscriptions of a slot the node no longer owns.
            raise ShardLost(f"the cluster moved the slot of {channel} away from {shard.name}")
        return message

    def _check_pings(self) -> None:
        now = asyncio.get_running_loop().time()
        for shard in self._shards.values():
            if shard.ping_sent is not None and now - shard.ping_sent > self._ping_timeout:
                raise ShardLost(
                    f"shard {shard.name} did not answer PING for {now - shard.ping_sent:.1f} s"
                )
