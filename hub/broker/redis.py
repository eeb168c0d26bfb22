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
import json
import logging
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from hub.broker import redis_scripts as lua
from hub.broker.base import (
    AppendResult,
    Entry,
    Envelope,
    FrameHandler,
    InflightReply,
    Orphan,
    ReconnectHandler,
    Replay,
    ReplyLost,
)
from hub.broker.redis_connect import connect
from hub.broker.redis_durable import append_and_wait
from hub.broker.redis_link import PubSubConnection, PubSubLink
from hub.broker.redis_names import RedisNames
from hub.broker.redis_quotas import RedisQuotas
from hub.broker.redis_rooms import IN_FLIGHT, RedisRooms
from hub.broker.redis_shards import NodeClient, ShardedPubSub
from hub.protocol import parse_id

log = logging.getLogger(__name__)

FINISHED_DELTAS_TTL = 60.0
"""Seconds a finished reply's deltas stay, for a client resuming right at its ``done``."""

ORPHAN_TTL = 86400.0
"""Seconds a reply's deltas and reply→channel key live at most, if nobody ever finishes it."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBroker(RedisRooms, RedisQuotas):
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
        self._inflight = client.register_script(lua.INFLIGHT)
        self._delta = client.register_script(lua.DELTA.replace("'PUBLISH'", f"'{publish}'"))
        self._claim = client.register_script(lua.CLAIM)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._dead_workers = client.register_script(lua.DEAD_WORKERS)
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
            _ms(dedupe_ttl),
            reply,
            _ms(FINISHED_DELTAS_TTL),
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
                await self._redis.set(n.reply(start_reply), channel, px=_ms(ORPHAN_TTL))
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

    # -- replies in flight ---------------------------------------------------------------
    async def reply_begin(self, channel: str, reply: str, worker: str, meta: str) -> None:
        n = self._names
        async with self._guard("record a reply in flight"):
            # Indexed under its worker first: an index entry without a reply is swept away,
            # a reply without an index entry would never be found. Each key in its own slot.
            await self._redis.sadd(n.worker_replies(worker), f"{reply}|{channel}")
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(n.inflight(channel), reply, json.dumps([worker, meta]))
            pipe.delete(n.deltas(channel, reply))
            await pipe.execute()
            await self._redis.set(n.reply(reply), channel, px=_ms(ORPHAN_TTL))

    async def reply_delta(
        self, channel: str, reply: str, worker: str, text: str, frame: Envelope
    ) -> None:
        n = self._names
        async with self._guard("publish a reply delta"):
            result = await self._delta(
                keys=[n.inflight(channel), n.deltas(channel, reply)],
                args=[
                    reply,
                    worker,
                    frame.seq,
                    text,
                    n.pub(channel),
                    frame.pack(),
                    _ms(ORPHAN_TTL),
                ],
            )
        if result == "lost":
            raise ReplyLost(reply)

    async def reply_end(self, reply: str, channel: str, worker: str) -> None:
        async with self._guard("drop an ended reply"):
            await self._redis.srem(self._names.worker_replies(worker), f"{reply}|{channel}")

    async def reply_owner(self, reply: str) -> tuple[str, str] | None:
        async with self._guard("look up a reply"):
            channel = cast(str | None, await self._redis.get(self._names.reply(reply)))
            if channel is None:
                return None
            state = cast(str | None, await self._redis.hget(self._names.inflight(channel), reply))
        if state is None:
            return None
        return channel, str(json.loads(state)[0])

    async def inflight(self, channel: str) -> list[InflightReply]:
        n = self._names
        async with self._guard("read replies in flight"):
            raw = await self._inflight(keys=[n.inflight(channel)], args=[n.deltas(channel, "")])
        return self._parse_inflight(channel, raw)

    async def heartbeat(self, worker: str) -> None:
        async with self._guard("renew this worker's heartbeat", urgent=True):
            await self._heartbeat(keys=[self._names.workers()], args=[worker, "1"])

    async def worker_gone(self, worker: str) -> None:
        async with self._guard("hand this worker's replies over"):
            await self._heartbeat(keys=[self._names.workers()], args=[worker, "0"])

    async def dead_workers(self, worker: str, ttl: float) -> list[str]:
        async with self._guard("look for dead workers"):
            dead = cast(
                list[list[str]],
                await self._dead_workers(keys=[self._names.workers()], args=[worker, _ms(ttl)]),
            )
        return [str(name) for name, _heard in dead]

    async def orphans(self, worker: str, ttl: float, limit: int) -> list[Orphan]:
        n = self._names
        out: list[Orphan] = []
        async with self._guard("look for replies of dead workers"):
            dead = cast(
                list[list[str]],
                await self._dead_workers(keys=[n.workers()], args=[worker, _ms(ttl)]),
            )
            for name, heard in dead:
                if len(out) >= limit:
                    break
                key = n.worker_replies(name)
                members = cast(
                    list[str], await self._redis.srandmember(key, limit - len(out)) or []
                )
                if not members:
                    # Nothing left to take over: forget the worker (a live one stamps again).
                    await self._redis.hdel(n.workers(), name)
                for member in members:
                    reply, _, channel = member.partition("|")
                    out.append(Orphan(channel, reply, name, int(heard)))
        return out

    async def reply_claim(self, orphan: Orphan, worker: str) -> InflightReply | None:
        n = self._names
        member = f"{orphan.reply}|{orphan.channel}"
        async with self._guard("take a reply over"):
            await self._redis.sadd(n.worker_replies(worker), member)
            raw = await self._claim(
                keys=[n.inflight(orphan.channel), n.deltas(orphan.channel, orphan.reply)],
                args=[orphan.reply, orphan.worker, worker],
            )
            await self._redis.srem(n.worker_replies(orphan.worker), member)
            if not raw:
                await self._redis.srem(n.worker_replies(worker), member)
                return None
        meta, deltas = raw
        return InflightReply(orphan.reply, orphan.channel, worker, str(meta), list(deltas))

    @staticmethod
    def _parse_inflight(channel: str, raw: list[Any]) -> list[InflightReply]:
        out = []
        for reply, state, deltas in raw:
            worker, meta = json.loads(state)
            out.append(InflightReply(reply, channel, worker, meta, list(deltas)))
        return out
