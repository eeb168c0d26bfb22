"""The ``Quotas`` role on Redis; each command touches one key, so none crosses a cluster slot."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from hub.broker import redis_scripts as lua
from hub.broker.redis_names import RedisNames, millis
from hub.protocol import dm_channel


def _listed(key: str, holder: str) -> str:
    """How a slot is named in its worker's list (limit keys hold no newline)."""
    return f"{key}\n{holder}"


class RedisQuotas:
    """Leased slots, expiring counters and marks; mixed into ``RedisBroker``."""

    _redis: Redis | RedisCluster
    _cluster: RedisCluster | None
    _names: RedisNames
    _set_take: AsyncScript  # registered by RedisRooms

    def _guard(self, what: str, *, urgent: bool = False) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _init_quotas(self, client: Redis | RedisCluster) -> None:
        self._slot_take = client.register_script(lua.SLOT_TAKE)
        self._slot_renew = client.register_script(lua.SLOT_RENEW)
        self._counter_add = client.register_script(lua.COUNTER_ADD)

    async def slot_take(
        self, key: str, holder: str, limit: int, ttl: float, worker: str | None = None
    ) -> bool:
        async with self._guard("check a limit"):
            if worker is not None:  # listed first: a worker dying in between leaves no orphan
                await self._redis.sadd(self._names.worker_slots(worker), _listed(key, holder))
            held = await self._slot_take(
                keys=[self._names.slots(key)], args=[holder, limit, millis(ttl)]
            )
            if worker is not None and not held:
                await self._redis.srem(self._names.worker_slots(worker), _listed(key, holder))
        return bool(held)

    async def slot_release(self, key: str, holder: str, worker: str | None = None) -> None:
        async with self._guard("release a limit"):
            await self._redis.zrem(self._names.slots(key), holder)
            if worker is not None:
                await self._redis.srem(self._names.worker_slots(worker), _listed(key, holder))

    async def slots_sweep(self, worker: str) -> int:
        async with self._guard("free a dead worker's limits"):
            listed = cast(list[str], await self._set_take(keys=[self._names.worker_slots(worker)]))
            # One pipeline, not a round trip per slot: a worker may have held thousands, and
            # the list is already taken (what this misses stays until its day-long lease).
            pipe = self._redis.pipeline(transaction=False)
            for item in listed:
                key, _, holder = item.partition("\n")
                pipe.zrem(self._names.slots(key), holder)
            await pipe.execute()
        return len(listed)

    async def slot_renew(self, slots: list[tuple[str, str]], ttl: float) -> None:
        if not slots:
            return
        async with self._guard("renew limits"):
            if self._cluster is not None:  # a cluster pipeline cannot reload a missing script
                for key, holder in slots:
                    await self._slot_renew(
                        keys=[self._names.slots(key)], args=[holder, millis(ttl)]
                    )
                return
            pipe = cast(Redis, self._redis).pipeline(transaction=False)
            for key, holder in slots:
                await self._slot_renew(
                    keys=[self._names.slots(key)], args=[holder, millis(ttl)], client=pipe
                )
            await pipe.execute()

    async def counter_add(self, key: str, amount: int, ttl: float) -> int:
        async with self._guard("count usage"):
            total = await self._counter_add(
                keys=[self._names.counter(key)], args=[amount, millis(ttl)]
            )
        return int(total)

    async def mark_set(self, key: str, value: str, ttl: float) -> None:
        async with self._guard("set a mark"):
            await self._redis.set(self._names.mark(key), value, px=millis(ttl))

    async def mark_get(self, key: str) -> str | None:
        async with self._guard("read a mark"):
            return cast(str | None, await self._redis.get(self._names.mark(key)))

    async def expire_user(self, user_id: str, ttl: float) -> None:
        n, dm = self._names, dm_channel(user_id)
        async with self._guard("set a user's data to expire"):
            pipe = self._redis.pipeline(transaction=False)
            for key in (n.log(dm), n.meta(dm), n.rooms(user_id)):
                pipe.pexpire(key, millis(ttl))
            await pipe.execute()
