"""A reply's stream: every piece is streamed before its done, even when the broker is slow or down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub.broker.base import BrokerError, Envelope
from hub.broker.memory import MemoryBroker
from hub.core.hub import Hub
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from tests.core.conftest import CoreHub, ListSink, make_settings

TEXT = " ".join(f"w{i}" for i in range(30))


class SlowDeltas(MemoryBroker):
    """Publishes deltas after a pause (a slow Redis round trip), and refuses them while down."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause
        self.down = False
        self.refused = 0

    async def reply_delta(
        self, channel: str, reply: str, worker: str, text: str, frame: Envelope
    ) -> None:
        await asyncio.sleep(self.pause)
        if self.down:
            self.refused += 1
            raise BrokerError("Redis is down (test)")
        await super().reply_delta(channel, reply, worker, text, frame)


async def started(broker: MemoryBroker, echo_delay: float) -> CoreHub:
    hub = Hub(make_settings(), broker, EchoLLM(echo_delay), Metrics())
    await hub.start()
    return CoreHub(hub)


@pytest.fixture
async def slow() -> AsyncIterator[tuple[CoreHub, SlowDeltas]]:
    broker = SlowDeltas(pause=0.05)
    core = await started(broker, echo_delay=0.005)
    try:
        yield core, broker
    finally:
        for conn in core.conns:
            conn.close(1000, "")
        await core.hub.close()


def streamed(sink: ListSink) -> tuple[list[int], str]:
    deltas = sink.of("delta")
    return [d["seq"] for d in deltas], "".join(d["text"] for d in deltas)


async def test_pieces_that_arrive_while_the_last_delta_is_published_are_streamed(
    slow: tuple[CoreHub, SlowDeltas],
) -> None:
    core, _broker = slow
    conn, sink = await core.open("ann")
    await core.hub.messages.post(conn.user, "dm:ann", TEXT, None)
    (done,) = await sink.until(lambda: sink.of("done"))
    seqs, text = streamed(sink)
    assert seqs == list(range(len(seqs)))
    assert text == done["text"] == f"Echo: {TEXT}"


async def test_deltas_made_while_the_broker_is_down_are_held_and_sent_in_order(
    slow: tuple[CoreHub, SlowDeltas],
) -> None:
    core, broker = slow
    conn, sink = await core.open("ann")
    await core.hub.messages.post(conn.user, "dm:ann", TEXT, None)
    await sink.until(lambda: sink.of("delta"))
    broker.down = True
    await asyncio.sleep(0.15)
    broker.down = False
    (done,) = await sink.until(lambda: sink.of("done"))
    assert broker.refused > 0
    seqs, text = streamed(sink)
    assert seqs == list(range(len(seqs)))  # no gap where the broker refused
    assert text == done["text"] == f"Echo: {TEXT}"
    assert done["stop_reason"] == "end"
