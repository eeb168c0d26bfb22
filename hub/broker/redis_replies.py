"""Replies in flight, worker heartbeats and takeover on Redis; mixed into ``RedisBroker``.

A reply is indexed under its worker (a set per worker) before it is recorded in its channel's
in-flight hash, so a worker that dies leaves every reply of its findable by the sweepers of the
others; each step touches keys of one slot, so the same code runs on a Redis Cluster.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from hub.broker import redis_scripts as lua
from hub.broker.base import Envelope, InflightReply, Orphan, ReplyLost
from hub.broker.redis_names import RedisNames, millis

ORPHAN_TTL = 86400.0
"""Seconds a reply's deltas and reply→channel key live at most, if nobody ever finishes it."""


class RedisReplies:
    """The ``Replies`` role of ``RedisBroker``: in flight, deltas, heartbeats, takeover."""

    _redis: Redis | RedisCluster
    _names: RedisNames

    def _guard(self, what: str, *, urgent: bool = False) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _register_reply_scripts(self, client: Redis | RedisCluster, publish: str) -> None:
        self._inflight = client.register_script(lua.INFLIGHT)
        self._delta = client.register_script(lua.DELTA.replace("'PUBLISH'", f"'{publish}'"))
        self._claim = client.register_script(lua.CLAIM)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._dead_workers = client.register_script(lua.DEAD_WORKERS)

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
            await self._redis.set(n.reply(reply), channel, px=millis(ORPHAN_TTL))

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
                    millis(ORPHAN_TTL),
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

    async def heartbeat(self, worker: str) -> float:
        async with self._guard("renew this worker's heartbeat", urgent=True):
            gap = await self._heartbeat(keys=[self._names.workers()], args=[worker, "1"])
        return int(gap) / 1000

    async def worker_gone(self, worker: str) -> None:
        async with self._guard("hand this worker's replies over"):
            await self._heartbeat(keys=[self._names.workers()], args=[worker, "0"])

    async def dead_workers(self, worker: str, ttl: float) -> list[str]:
        async with self._guard("look for dead workers"):
            dead = cast(
                list[list[str]],
                await self._dead_workers(keys=[self._names.workers()], args=[worker, millis(ttl)]),
            )
        return [str(name) for name, _heard in dead]

    async def orphans(self, worker: str, ttl: float, limit: int) -> list[Orphan]:
        n = self._names
        out: list[Orphan] = []
        async with self._guard("look for replies of dead workers"):
            dead = cast(
                list[list[str]],
                await self._dead_workers(keys=[n.workers()], args=[worker, millis(ttl)]),
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
