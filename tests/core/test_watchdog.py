"""The watchdog: a reply whose worker stopped renewing its lease is closed, and only then."""

from __future__ import annotations

import asyncio

from hub.broker.memory import MemoryBroker
from hub.core.hub import Hub
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from tests.core.conftest import ListSink, make_settings


async def test_an_orphaned_reply_is_closed_after_its_lease_lapsed_for_a_whole_lease() -> None:
    broker = MemoryBroker()
    hub = Hub(make_settings(reply_lease=0.2), broker, EchoLLM(0.0), Metrics())
    await hub.start()
    try:
        await broker.subscribe("dm:ann")
        await broker.reply_begin("dm:ann", "r1", "dead-worker", "{}", lease=0.2)
        state = (await broker.inflight("dm:ann"))[0]
        hub.watchdog.watch("dm:ann", state)
        await hub.watchdog.tick()
        assert await broker.inflight("dm:ann")  # leased: still streaming
        await asyncio.sleep(0.25)
        await hub.watchdog.tick()  # lapsed once: might be Redis back from an outage
        assert await broker.inflight("dm:ann")
        await asyncio.sleep(0.25)
        await hub.watchdog.tick()
        assert await broker.inflight("dm:ann") == []
        entries, _ = await broker.history("dm:ann", None, 5)
        assert '"stop_reason":"interrupted"' in entries[-1].body
        assert hub.watchdog.watched() == set()
    finally:
        await hub.close()


async def test_a_live_worker_keeps_its_replies_leased() -> None:
    broker = MemoryBroker()
    hub = Hub(make_settings(reply_lease=0.2, echo_delay=0.05), broker, EchoLLM(0.05), Metrics())
    await hub.start()
    try:
        sink = ListSink()
        reply = hub.runner.start("dm:ann")
        await asyncio.sleep(0.05)
        for _ in range(4):
            await hub.watchdog.tick()
            states = [s for s in await broker.inflight("dm:ann") if s.reply == reply]
            assert states == [] or states[0].alive
            await asyncio.sleep(0.1)
        assert sink.frames == []
    finally:
        await hub.close()
