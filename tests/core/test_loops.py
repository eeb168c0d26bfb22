"""The background loops the hub starts: limit upkeep and presence diffs keep going after a
broker failure and end when cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.broker.base import BrokerError, OnlinePage
from hub.broker.memory import MemoryBroker
from hub.core.connection import Connection
from hub.core.limits import Limiter
from hub.core.presence import PresenceDiffs, change
from hub.core.registry import Registry
from hub.protocol import User
from tests.core.conftest import WAIT, ListSink, make_settings


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_upkeep_renews_what_is_held_and_goes_on_after_a_broker_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = MemoryBroker()
    limiter = Limiter(make_settings(presence_ttl=0.03), broker, "w1#1")
    held = await limiter.reserve_reply(User(id="ann", name="Ann"), "dm:ann", None)
    held.reply = "r1"
    renewed: list[list[tuple[str, str]]] = []
    thrice = asyncio.Event()

    async def renew(slots: list[tuple[str, str]], ttl: float) -> None:
        renewed.append(slots)
        if len(renewed) == 3:
            thrice.set()
        if len(renewed) == 1:
            raise BrokerError("down for a moment")

    monkeypatch.setattr(broker, "slot_renew", renew)
    asked = 0

    def running() -> set[str]:
        nonlocal asked
        asked += 1
        return {"r1"}

    task = asyncio.create_task(limiter.run(running))
    await asyncio.wait_for(thrice.wait(), WAIT)
    await _cancel(task)
    assert renewed[-1] == renewed[0]
    assert [key for key, _ in renewed[0]] == ["reply:user:ann", "reply:chan:dm:ann"]
    assert asked >= 3  # it asks which replies run here on every round


async def test_presence_diffs_are_sent_each_interval_and_a_failed_flush_stops_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, registry = MemoryBroker(), Registry()
    diffs = PresenceDiffs(broker, registry)
    sink = ListSink()
    conn = Connection(User(id="ann", name="Ann"), sink, 8)
    conn.start()
    assert conn.release() == []  # a session would, after its welcome
    registry.join(conn, "room:lobby")
    real_page = broker.presence_page
    failed = asyncio.Event()

    async def page(room: str, after: str | None, limit: int) -> OnlinePage:
        if not failed.is_set():
            failed.set()
            raise BrokerError("down for a moment")
        return await real_page(room, after, limit)

    monkeypatch.setattr(broker, "presence_page", page)
    diffs.add("room:lobby", change(1, {"bob": "Bob"}, []))
    task = asyncio.create_task(diffs.run(0.01))
    await asyncio.wait_for(failed.wait(), WAIT)
    diffs.add("room:lobby", change(1, {"cy": "Cy"}, []))
    frames: list[dict[str, Any]] = await sink.until(lambda: sink.of("presence"))
    await _cancel(task)
    assert [j["id"] for j in frames[0]["joins"]] == ["cy"]  # bob's went with the failed flush
    assert diffs.pending_rooms() == 0
