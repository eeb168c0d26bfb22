"""The shared broker: Redis pub/sub for fan-out, Streams for logs, Lua for atomic steps.

One pub/sub connection per worker (``PubSubLink``) carries every topic this worker has local
interest in. Commands use pooled connections with short timeouts, so a Redis that is down
makes them fail fast with ``BrokerError`` instead of hanging.

On a Redis Cluster (``redis+cluster://``) the same code runs on redis-py's cluster client:
every key a script or MULTI touches carries its channel's hash tag (one slot), frames go
out with SPUBLISH to the shard owning the channel, and the link is a ``ShardedPubSub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from hub.broker import redis_scripts as lua
from hub.broker.base import (
    AppendResult,
    Entry,
    Envelope,
    FrameHandler,
    ReconnectHandler,
    Replay,
)
from hub.broker.redis_connect import connect
from hub.broker.redis_durable import append_and_wait
from hub.broker.redis_link import PubSubConnection, PubSubLink
from hub.broker.redis_names import RedisNames, millis
from hub.broker.redis_quotas import RedisQuotas
from hub.broker.redis_replies import ORPHAN_TTL, RedisReplies
from hub.broker.redis_rooms import IN_FLIGHT, RedisRooms
from hub.broker.redis_shards import NodeClient, ShardedPubSub
from hub.protocol import parse_id

log = logging.getLogger(__name__)

FINISHED_DELTAS_TTL = 60.0
"""Seconds a finished reply's deltas stay, for a client resuming right at its ``done``."""


class RedisBroker(RedisRooms, RedisReplies, RedisQuotas):
    """Implements ``Broker`` on one Redis, or one Redis Cluster, shared by every worker.

    A ``RedisCluster`` needs ``node_client`` (a client per node, for sharded pub/sub), as
    ``from_url`` makes; ``wait_replicas``: stored messages wait for that many replicas.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        node_client: NodeClient | None = None,
        where: str | None = None,
        prefix: str = "hub",
        history_max: int = 1000,
        wait_replicas: int = 0,
        op_timeout: float = 2.0,
        queue_timeout: float = 15.0,
        ping_interval: float = 3.0,
        ping_timeout: float = 2.0,
        backoff_first: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        if not client.get_encoder().decode_responses:
            raise ValueError("RedisBroker needs a client made with decode_responses=True")
        self._redis = client
        self._names = RedisNames(prefix)
        self._history_max = history_max
        self._wait_replicas = wait_replicas
        self._op_timeout = op_timeout
        self._queue_timeout = queue_timeout
        self._gate = asyncio.Semaphore(IN_FLIGHT)
        open_pubsub: Callable[[], PubSubConnection]
        if isinstance(client, RedisCluster):
            if node_client is None:
                raise ValueError("a RedisCluster client needs node_client (see from_url)")
            self._cluster: RedisCluster | None = client
            self._where = where or "Redis Cluster"
            open_pubsub = functools.partial(ShardedPubSub, client, node_client, ping_timeout)
        else:
            self._cluster = None
            kw = client.connection_pool.connection_kwargs
            self._where = where or str(kw.get("path") or f"{kw.get('host')}:{kw.get('port')}")
            open_pubsub = client.pubsub
        self._link = PubSubLink(
            open_pubsub,
            self._names,
            self._where,
            op_timeout=op_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            backoff_first=backoff_first,
            backoff_cap=backoff_cap,
        )

        # A cluster copies classic PUBLISH to every node; SPUBLISH stays in the channel's shard.
        publish = "SPUBLISH" if self._cluster is not None else "PUBLISH"
        self._append_text = lua.APPEND.replace("'PUBLISH'", f"'{publish}'")
        self._append = client.register_script(self._append_text)
        self._replay = client.register_script(lua.REPLAY)
        self._register_reply_scripts(client, publish)
        self._register_room_scripts(client)
        self._init_quotas(client)
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "hub",
        history_max: int = 1000,
        wait_replicas: int = 0,
        **options: float,
    ) -> RedisBroker:
        """Connect by URL (``redis://``, ``redis+cluster://``, ...; see ``redis_connect``)."""
        clients = connect(url, options.get("op_timeout", 2.0))
        return cls(
            clients.client,
            node_client=clients.node_client,
            where=clients.where,
            prefix=prefix,
            history_max=history_max,
            wait_replicas=wait_replicas,
            **options,
        )

    @property
    def connected(self) -> bool:
        """True while the pub/sub link is up (subscribed and answering the watchdog)."""
        return self._link.connected

    @property
    def names(self) -> RedisNames:
        """The key and channel names this broker uses."""
        return self._names

    # -- life and pub/sub (the link) -----------------------------------------------------
    async def start(self, on_frame: FrameHandler, on_reconnect: ReconnectHandler) -> None:
        """Start the pub/sub link; a Redis that is not up yet is not fatal (see PubSubLink)."""
        await self._link.start(on_frame, on_reconnect)

    async def close(self) -> None:
        self._closed = True
        await self._link.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def ping(self) -> bool:
        """True when a command round trip works and, once started, the pub/sub link is up."""
        if self._closed:
            return False
        try:
            async with asyncio.timeout(self._op_timeout):
                answered = bool(await self._redis.ping())
        except Exception:
            return False
        return answered and (not self._link.started or self._link.connected)

    def subscribed(self) -> dict[str, int]:
        """Local subscription counts, for tests and metrics."""
        return self._link.subscribed()

    async def subscribe(self, topic: str) -> None:
        await self._link.subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        await self._link.unsubscribe(topic)

    async def publish(self, topic: str, frame: Envelope) -> None:
        async with self._guard("publish a frame"):
            if self._cluster is not None:
                await self._cluster.spublish(self._names.pub(topic), frame.pack())
            else:
                await self._redis.publish(self._names.pub(topic), frame.pack())

    # -- channel logs --------------------------------------------------------------------
    async def append(
        self,
        channel: str,
        body: str,
        *,
        publish_as: str = "message",
        dedupe: str | None = None,
        dedupe_ttl: float = 86400.0,
        finish_reply: str | None = None,
        owner: str = "",
        start_reply: str | None = None,
    ) -> AppendResult | None:
        n = self._names
        reply = finish_reply or ""
        keys = [
            n.log(channel),
            n.meta(channel),
            n.ref(channel, dedupe or ""),
            n.inflight(channel),
            n.deltas(channel, reply),
            n.deltas(channel, start_reply or ""),
        ]
        args: list[str | int] = [
            body,
            publish_as,
            n.pub(channel),
            self._history_max,
            "1" if dedupe is not None else "0",
            millis(dedupe_ttl),
            reply,
            millis(FINISHED_DELTAS_TTL),
            owner,
            start_reply or "",
            "1" if self._wait_replicas else "0",
        ]
        member = f"{start_reply}|{channel}"
        async with self._guard("append a message"):
            if start_reply:  # indexed first: see reply_begin
                await self._redis.sadd(n.worker_replies(owner), member)
            if self._wait_replicas:
                result = await append_and_wait(
                    self._redis,
                    self._append_text,
                    keys,
                    args,
                    self._wait_replicas,
                    self._op_timeout,
                )
            else:
                result = cast(list[str], await self._append(keys=keys, args=args))
            if start_reply and result[0] == "ok":
                await self._redis.set(n.reply(start_reply), channel, px=millis(ORPHAN_TTL))
            elif start_reply:
                await self._redis.srem(n.worker_replies(owner), member)
        if result[0] == "gone":
            return None
        return AppendResult(result[1], duplicate=result[0] == "dup")

    async def history(
        self, channel: str, before: str | None, limit: int
    ) -> tuple[list[Entry], bool]:
        bound = None if before is None else parse_id(before)
        end = "+" if bound is None else f"{bound[0]}-{bound[1]}"
        async with self._guard("read history"):
            raw = cast(
                list[tuple[str, dict[str, str]]],
                await self._redis.xrevrange(
                    self._names.log(channel), end, "-", count=limit + (2 if bound else 1)
                ),
            )
        entries = [
            Entry(entry_id, fields["b"])
            for entry_id, fields in raw
            if bound is None or parse_id(entry_id) < bound
        ]
        return entries[:limit][::-1], len(entries) > limit

    async def replay(self, channel: str, after: str) -> Replay | None:
        try:
            ms, seq = parse_id(after)
        except ValueError:
            return None
        n = self._names
        async with self._guard("replay a channel"):
            raw = await self._replay(
                keys=[n.log(channel), n.meta(channel), n.inflight(channel)],
                args=[ms, seq, n.deltas(channel, "")],
            )
        if raw is None:
            return None
        entries = [Entry(entry_id, body) for entry_id, body in raw[0]]
        return Replay(entries, self._parse_inflight(channel, raw[1]))
