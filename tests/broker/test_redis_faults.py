"""RedisBroker against a real redis-server that crashes, restarts, or freezes (half-open link)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hub.broker.base import BrokerError, Envelope, Kind
from hub.broker.redis import RedisBroker
from tests.broker.conftest import WAIT, Frames, event
from tests.support.redis_server import RedisServer

FAST = {"op_timeout": 0.5, "ping_interval": 0.3, "ping_timeout": 0.3, "backoff_cap": 0.4}
"""Short timeouts so each fault is noticed soon; waits below are bounded, never asserted."""


async def until(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Poll ``check`` until it holds; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (the state changes outside this loop)
            await asyncio.sleep(0.05)


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


async def started(url: str) -> tuple[RedisBroker, Frames]:
    broker = RedisBroker.from_url(url, prefix="faults", history_max=100, **FAST)
    frames = Frames()
    await broker.start(frames, frames.on_reconnect)
    return broker, frames


async def down(broker: RedisBroker) -> bool:
    return not await broker.ping()


async def up(broker: RedisBroker) -> bool:
    return await broker.ping()


async def fails_fast(action: Awaitable[object]) -> BrokerError:
    """The command raises BrokerError, and does so within the bound (it never hangs)."""
    async with asyncio.timeout(WAIT):
        with pytest.raises(BrokerError) as caught:
            await action
    assert "Redis" in str(caught.value)
    return caught.value


async def test_crash_and_restart_on_the_same_port(server: RedisServer) -> None:
    broker, frames = await started(server.url)
    try:
        await broker.subscribe("room:a")
        before = await broker.append("room:a", '{"text":"before"}')
        assert before is not None
        await frames.until(lambda: len(frames.payloads("room:a")) == 1)

        server.kill()
        await until(lambda: down(broker))
        await fails_fast(broker.append("room:a", '{"text":"lost"}'))
        await fails_fast(broker.history("room:a", None, 10))
        await fails_fast(broker.publish("room:a", event("x")))
        await fails_fast(broker.replay("room:a", before.id))
        await fails_fast(broker.rate_take("k", 1.0, 1))
        await broker.subscribe("room:b")  # counted now, subscribed for real once back

        server.start()
        await frames.until(lambda: frames.reconnects >= 1)
        await until(lambda: up(broker))
        assert broker.connected
        other, _ = await started(server.url)
        try:
            await other.publish("room:a", event("after restart"))
            await other.publish("room:b", event("subscribed while down"))
            await frames.payload("room:a", "after restart")
            await frames.payload("room:b", "subscribed while down")
            after = await broker.append("room:a", '{"text":"new log"}')
            assert after is not None
        finally:
            await other.close()
        assert await broker.replay("room:a", before.id) is None
        fresh = await broker.replay("room:a", after.id)
        assert fresh is not None and fresh.entries == []
        # The restart emptied Redis's script cache too: every scripted step loads it again.
        await broker.reply_begin("room:a", "r1", "w1", "{}")
        await broker.reply_delta(
            "room:a", "r1", "w1", "hi", Envelope(Kind.DELTA, '{"type":"delta"}', reply="r1", seq=0)
        )
        await broker.heartbeat("w1")
        [reply] = await broker.inflight("room:a")
        assert reply.deltas == ["hi"]
        assert (await broker.presence_enter("lobby", "alice", "Alice", "w1")).changed
        assert (await broker.presence_page("lobby", None, 10)).members == [("alice", "Alice")]
        assert await broker.presence_sweep("w1") == {"lobby": (["alice"], 0)}
        assert await broker.rate_take("k", 1.0, 1) == 0
    finally:
        await broker.close()


async def test_graceful_stop_and_restart(server: RedisServer) -> None:
    broker, frames = await started(server.url)
    try:
        await broker.subscribe("room:a")
        server.stop()
        await until(lambda: down(broker))
        server.start()
        await frames.until(lambda: frames.reconnects >= 1)
        await until(lambda: up(broker))
        await broker.publish("room:a", event("back"))
        await frames.payload("room:a", "back")
    finally:
        await broker.close()


async def test_frozen_server_is_noticed_by_the_watchdog(server: RedisServer) -> None:
    broker, frames = await started(server.url)
    try:
        await broker.subscribe("room:a")
        await broker.publish("room:a", event("warm"))
        await frames.payload("room:a", "warm")

        server.pause()  # the socket stays open; nothing answers, nothing errors
        await until(lambda: down(broker))

        async def link_dropped() -> bool:
            return not broker.connected

        await until(link_dropped)
        await fails_fast(broker.append("room:a", '{"text":"frozen"}'))

        server.resume()
        await frames.until(lambda: frames.reconnects >= 1)
        await until(lambda: up(broker))
        await broker.publish("room:a", event("thawed"))
        await frames.payload("room:a", "thawed")
    finally:
        server.resume()
        await broker.close()


async def test_start_while_redis_is_down_then_comes_up() -> None:
    server = RedisServer()
    try:
        broker, frames = await started(server.url)  # nothing listens on that port yet
        try:
            assert not await broker.ping()
            await broker.subscribe("room:late")
            await fails_fast(broker.append("room:late", '{"text":"x"}'))
            server.start()
            await frames.until(lambda: frames.reconnects >= 1)
            await until(lambda: up(broker))
            await broker.publish("room:late", event("hello"))
            await frames.payload("room:late", "hello")
        finally:
            await broker.close()
    finally:
        server.cleanup()


async def test_close_cancels_every_task(server: RedisServer) -> None:
    before = asyncio.all_tasks()
    broker, frames = await started(server.url)
    await broker.subscribe("room:a")
    server.kill()
    await until(lambda: down(broker))
    server.start()
    await frames.until(lambda: frames.reconnects >= 1)
    await broker.close()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover == set()
    assert not await broker.ping()
    await broker.close()  # twice is harmless


async def test_on_frame_errors_do_not_stop_delivery(server: RedisServer) -> None:
    seen: list[str] = []

    def flaky(topic: str, frame: Envelope) -> None:
        seen.append(frame.payload)
        if frame.payload == "boom":
            raise RuntimeError("handler bug")

    async def nothing() -> None:
        return None

    broker = RedisBroker.from_url(server.url, prefix="faults", history_max=100, **FAST)
    await broker.start(flaky, nothing)
    try:
        await broker.subscribe("room:a")
        await broker.publish("room:a", event("boom"))
        await broker.publish("room:a", event("fine"))
        async with asyncio.timeout(WAIT):
            while "fine" not in seen:  # noqa: ASYNC110 (no event to wait on in this handler)
                await asyncio.sleep(0.02)
        assert broker.connected
    finally:
        await broker.close()
