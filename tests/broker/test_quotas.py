"""The ``Quotas`` role: slots shared by every worker, counters, marks, expiring user data."""

from __future__ import annotations

import asyncio

from tests.broker.conftest import Backend


async def test_slots_are_shared_and_bounded(backend: Backend) -> None:
    one, _ = await backend.make()
    other, _ = await backend.make() if backend.shared else (one, None)
    taken = [await one.slot_take("conn:ann", f"w1|{i}", 3, 30) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert await other.slot_take("conn:ann", "w2|1", 3, 30) is False
    assert await one.slot_take("conn:ann", "w1|0", 3, 30) is True  # a holder keeps its own
    await other.slot_release("conn:ann", "w1|1")
    assert await other.slot_take("conn:ann", "w2|1", 3, 30) is True
    assert await one.slot_take("conn:bob", "w1|9", 3, 30) is True


async def test_a_lease_not_renewed_frees_its_slot(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.slot_take("reply:ann", "dead", 1, 0.05)
    assert await broker.slot_take("reply:ann", "live", 1, 30) is False
    await asyncio.sleep(0.2)
    assert await broker.slot_take("reply:ann", "live", 1, 30)
    await broker.slot_renew([("reply:ann", "live"), ("reply:ann", "gone")], 30)
    assert await broker.slot_take("reply:ann", "gone", 1, 30) is False


async def test_counters_add_up_and_expire_from_creation(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.counter_add("tokens:ann", 100, 30) == 100
    assert await broker.counter_add("tokens:ann", 50, 30) == 150
    assert await broker.counter_add("tokens:ann", 0, 30) == 150
    assert await broker.counter_add("short", 5, 0.05) == 5
    await asyncio.sleep(0.2)
    assert await broker.counter_add("short", 1, 0.05) == 1


async def test_marks_are_read_by_any_worker_until_they_expire(backend: Backend) -> None:
    one, _ = await backend.make()
    other, _ = await backend.make() if backend.shared else (one, None)
    await one.mark_set("revoked:ann", "1700000000", 30)
    assert await other.mark_get("revoked:ann") == "1700000000"
    assert await other.mark_get("revoked:bob") is None
    await one.mark_set("brief", "x", 0.05)
    await asyncio.sleep(0.2)
    assert await one.mark_get("brief") is None


async def test_a_users_data_expires_after_its_last_touch(backend: Backend) -> None:
    broker, _ = await backend.make()
    await broker.append("dm:guest-1", '{"text":"hi"}')
    await broker.room_join("lobby", "guest-1", "Gus")
    await broker.append("dm:keeper", '{"text":"stay"}')
    await broker.expire_user("guest-1", 0.05)
    await asyncio.sleep(0.2)
    await broker.expire_user("someone-else", 30)  # the embedded broker sweeps on a touch
    assert (await broker.history("dm:guest-1", None, 10))[0] == []
    assert await broker.user_rooms("guest-1") == []
    assert len((await broker.history("dm:keeper", None, 10))[0]) == 1


async def test_a_dead_workers_listed_slots_are_swept_once(backend: Backend) -> None:
    one, _ = await backend.make()
    other, _ = await backend.make() if backend.shared else (one, None)
    assert await one.slot_take("conn:ann", "w1|1", 2, 86400, "w1")
    assert await one.slot_take("conn:ann", "w1|2", 2, 86400, "w1")
    assert await one.slot_take("conn:ann", "w1|3", 2, 86400, "w1") is False  # not listed
    await one.slot_release("conn:ann", "w1|2", "w1")
    assert await other.slot_take("conn:ann", "w2|1", 2, 86400, "w2")
    assert await other.slot_take("conn:ann", "w2|2", 2, 86400, "w2") is False
    assert await other.slots_sweep("w1") == 1  # w1|1 only: w1|2 was released, w1|3 refused
    assert await one.slots_sweep("w1") == 0  # one sweeper frees each
    assert await other.slot_take("conn:ann", "w2|2", 2, 86400, "w2")
    assert await other.slot_take("conn:ann", "w2|3", 2, 86400, "w2") is False  # w2's stay
