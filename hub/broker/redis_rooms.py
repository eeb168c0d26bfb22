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
from hub.broker.base import BrokerError
from hub.broker.redis_names import RedisNames


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisRooms:
    """The Rooms, Presence, RateLimits and ticket roles of ``RedisBroker``."""

    _redis: Redis | RedisCluster
    _cluster: RedisCluster | None
    _names: RedisNames
    _where: str
    _op_timeout: float

    def _register_room_scripts(self, client: Redis | RedisCluster) -> None:
        self._presence_touch = client.register_script(lua.PRESENCE_TOUCH)
        self._presence_online = client.register_script(lua.PRESENCE_ONLINE)
        self._presence_drop_user = client.register_script(lua.PRESENCE_DROP_USER)
        self._rate_take = client.register_script(lua.RATE_TAKE)

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Bound a command in time and turn every Redis failure into one ``BrokerError``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerError(
                f"Redis at {self._where} could not {what}: {reason}. "
                "Check that Redis is running and reachable; the hub reconnects by itself."
            ) from exc

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

    async def room_members(self, room: str) -> dict[str, str]:
        async with self._guard("read room members"):
            return cast(dict[str, str], await self._redis.hgetall(self._names.members(room)))

    async def user_rooms(self, user_id: str) -> list[str]:
        async with self._guard("read a user's rooms"):
            rooms = cast(set[str], await self._redis.smembers(self._names.rooms(user_id)))
        return sorted(rooms)

    async def presence_touch(self, room: str, user_id: str, worker: str, ttl: float) -> None:
        async with self._guard("mark presence"):
            await self._presence_touch(
                keys=[self._names.presence(room)], args=[f"{user_id}|{worker}", _ms(ttl)]
            )

    async def presence_drop(self, room: str, user_id: str, worker: str | None) -> None:
        key = self._names.presence(room)
        async with self._guard("drop presence"):
            if worker is None:
                await self._presence_drop_user(keys=[key], args=[f"{user_id}|"])
            else:
                await self._redis.zrem(key, f"{user_id}|{worker}")

    async def presence_online(self, room: str) -> set[str]:
        async with self._guard("read presence"):
            members = await self._presence_online(keys=[self._names.presence(room)])
        return {member.partition("|")[0] for member in members}

    # -- limits --------------------------------------------------------------------------
    async def rate_take(self, key: str, rate: float, burst: int) -> float:
        async with self._guard("check a rate limit"):
            wait = await self._rate_take(keys=[self._names.rate(key)], args=[rate, burst])
        return float(wait)

    # -- tickets -------------------------------------------------------------------------
    async def ticket_put(self, key: str, value: str, ttl: float) -> None:
        async with self._guard("store a ticket"):
            await self._redis.set(self._names.ticket(key), value, px=_ms(ttl))

    async def ticket_take(self, key: str) -> str | None:
        async with self._guard("read a ticket"):
            value = await self._redis.getdel(self._names.ticket(key))
        return None if value is None else str(value)
