"""Rooms, presence, rate limits and tickets on Redis (one or a cluster), and the guard every
command of the broker runs in: the roles that need no pub/sub, one key (one slot) per step.

On a cluster a room's members and a user's rooms live in two slots, so joining or leaving
is two writes rather than one MULTI; each is idempotent, so a retry after a failure between
them completes the change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from hub.broker import redis_scripts as lua
from hub.broker.base import BrokerError, OnlinePage, PresenceChange
from hub.broker.presence_keys import member_of, sort_key
from hub.broker.redis_names import RedisNames, millis

IN_FLIGHT = 64
"""Commands one worker keeps in flight to Redis at most; more gain nothing but timeouts."""


class RedisRooms:
    """The Rooms, Presence, RateLimits and ticket roles of ``RedisBroker``."""

    _redis: Redis | RedisCluster
    _cluster: RedisCluster | None
    _names: RedisNames
    _where: str
    _op_timeout: float
    _queue_timeout: float
    _gate: asyncio.Semaphore

    def _register_room_scripts(self, client: Redis | RedisCluster) -> None:
        self._presence_enter = client.register_script(lua.PRESENCE_ENTER)
        self._presence_exit = client.register_script(lua.PRESENCE_EXIT)
        self._presence_page = client.register_script(lua.PRESENCE_PAGE)
        self._presence_sweep = client.register_script(lua.PRESENCE_SWEEP)
        self._set_take = client.register_script(lua.SET_TAKE)
        self._rate_take = client.register_script(lua.RATE_TAKE)

    @contextlib.asynccontextmanager
    async def _guard(self, what: str, *, urgent: bool = False) -> AsyncIterator[None]:
        """Bound a command in time and turn every Redis failure into one ``BrokerError``.

        At most ``IN_FLIGHT`` commands run at once; the rest queue (a join storm waits its
        turn instead of timing out or opening a connection each). ``urgent`` ones (the
        heartbeat) skip the queue, so a busy worker is not taken for dead.
        """
        if not urgent:
            try:
                async with asyncio.timeout(self._queue_timeout):
                    await self._gate.acquire()
            except TimeoutError:
                raise BrokerError(
                    f"Redis at {self._where} could not {what}: {IN_FLIGHT} commands of this "
                    f"worker were in flight for {self._queue_timeout:.0f} s. The worker is "
                    "overloaded; add workers or Redis capacity."
                ) from None
        try:
            async with asyncio.timeout(self._op_timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerError(
                f"Redis at {self._where} could not {what}: {reason}. "
                "Check that Redis is running and reachable; the hub reconnects by itself."
            ) from exc
        finally:
            if not urgent:
                self._gate.release()

    # -- rooms and presence --------------------------------------------------------------
    async def room_join(self, room: str, user_id: str, name: str) -> bool:
        async with self._guard("join a room"):
            pipe = self._redis.pipeline(transaction=self._cluster is None)
            pipe.hset(self._names.members(room), user_id, name)
            pipe.sadd(self._names.rooms(user_id), room)
            added, _ = await pipe.execute()
        return bool(added)

    async def room_leave(self, room: str, user_id: str) -> bool:
        async with self._guard("leave a room"):
            pipe = self._redis.pipeline(transaction=self._cluster is None)
            pipe.hdel(self._names.members(room), user_id)
            pipe.srem(self._names.rooms(user_id), room)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def room_size(self, room: str) -> int:
        async with self._guard("count room members"):
            return int(await self._redis.hlen(self._names.members(room)))

    async def user_rooms(self, user_id: str) -> list[str]:
        async with self._guard("read a user's rooms"):
            rooms = cast(set[str], await self._redis.smembers(self._names.rooms(user_id)))
        return sorted(rooms)

    async def presence_enter(
        self, room: str, user_id: str, name: str, worker: str
    ) -> PresenceChange:
        n = self._names
        async with self._guard("mark presence"):
            changed, online = await self._presence_enter(
                keys=[n.online(room), n.holders(room), n.held(room, worker)],
                args=[user_id, sort_key(user_id, name)],
            )
            await self._redis.sadd(n.worker_rooms(worker), room)  # another slot
        return PresenceChange(bool(changed), int(online))

    async def presence_exit(self, room: str, user_id: str, worker: str) -> PresenceChange:
        n = self._names
        async with self._guard("drop presence"):
            changed, online = await self._presence_exit(
                keys=[n.online(room), n.holders(room), n.held(room, worker)], args=[user_id]
            )
        return PresenceChange(bool(changed), int(online))

    async def presence_page(self, room: str, after: str | None, limit: int) -> OnlinePage:
        n = self._names
        async with self._guard("read presence"):
            keys, online = await self._presence_page(
                keys=[n.online(room), n.holders(room)], args=[after or "", limit + 1]
            )
        return OnlinePage([member_of(k) for k in keys[:limit]], len(keys) > limit, int(online))

    async def presence_sweep(self, worker: str) -> dict[str, tuple[list[str], int]]:
        n = self._names
        swept: dict[str, tuple[list[str], int]] = {}
        async with self._guard("sweep a dead worker's presence"):
            rooms = cast(list[str], await self._set_take(keys=[n.worker_rooms(worker)]))
        for room in sorted(rooms):
            async with self._guard("sweep a dead worker's presence"):
                gone, online = await self._presence_sweep(
                    keys=[n.online(room), n.holders(room), n.held(room, worker)]
                )
            swept[room] = ([str(u) for u in gone], int(online))
        return swept

    async def rate_take(self, key: str, rate: float, burst: int) -> float:
        async with self._guard("check a rate limit"):
            wait = await self._rate_take(keys=[self._names.rate(key)], args=[rate, burst])
        return float(wait)

    # -- tickets -------------------------------------------------------------------------
    async def ticket_put(self, key: str, value: str, ttl: float) -> None:
        async with self._guard("store a ticket"):
            await self._redis.set(self._names.ticket(key), value, px=millis(ttl))

    async def ticket_take(self, key: str) -> str | None:
        async with self._guard("read a ticket"):
            value = await self._redis.getdel(self._names.ticket(key))
        return None if value is None else str(value)
