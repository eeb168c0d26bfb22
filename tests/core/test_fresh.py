"""SharedReads: a burst of callers shares reads, and no caller gets a value older than its call."""

from __future__ import annotations

import asyncio

import pytest

from hub.core.fresh import SharedReads


class Store:
    """A value that changes, read slowly, counting the reads."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.gate = asyncio.Event()
        self.fail = False

    async def read(self, key: str) -> tuple[str, int]:
        self.reads += 1
        seen = self.value
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("store down")
        return key, seen


async def test_a_burst_costs_two_reads_and_nobody_gets_a_stale_value() -> None:
    store = Store()
    reads = SharedReads(store.read)
    first = asyncio.create_task(reads.get("room"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.reads == 1  # the first read runs, with value 0
    store.value = 1  # a change after the first read began: later callers must see it
    burst = [asyncio.create_task(reads.get("room")) for _ in range(100)]
    await asyncio.sleep(0)
    store.gate.set()
    assert await first == ("room", 0)
    assert {await t for t in burst} == {("room", 1)}
    assert store.reads == 2
    await reads.close()


async def test_keys_are_read_apart_and_errors_reach_every_caller() -> None:
    store = Store()
    store.fail = True
    reads = SharedReads(store.read)
    tasks = [asyncio.create_task(reads.get(k)) for k in ("a", "b", "a")]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert store.reads == 2
    store.fail = False
    assert await reads.get("a") == ("a", 0)  # a failure is not remembered
    await reads.close()


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    store = Store()
    reads = SharedReads(store.read)
    quitter = asyncio.create_task(reads.get("room"))
    stayer = asyncio.create_task(reads.get("room"))
    await asyncio.sleep(0)
    quitter.cancel()
    store.gate.set()
    assert await stayer == ("room", 0)
    with pytest.raises(asyncio.CancelledError):
        await quitter
    await reads.close()
