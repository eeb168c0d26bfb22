"""Worker liveness and takeover on the embedded broker: a reply whose worker stopped beating is
claimed by exactly one live worker and continued under its id, at its next seq."""

from __future__ import annotations

import asyncio
import json

from hub.broker.base import Envelope, Kind, Orphan
from hub.broker.memory import MemoryBroker
from hub.core.hub import Hub
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from hub.protocol import Delta, encode
from tests.core.conftest import make_settings, started

TEXT = "one two three four five six"


async def orphan_in(broker: MemoryBroker, channel: str, streamed: list[str]) -> str:
    """A question and a reply that streamed ``streamed`` on a worker that then died."""
    body = {
        "channel": channel,
        "text": TEXT,
        "author": {"id": "ann", "name": "Ann", "role": "user"},
    }
    asked = await broker.append(channel, json.dumps(body), dedupe=None)
    assert asked is not None
    meta = json.dumps({"upto": asked.id})
    await broker.reply_begin(channel, "r1", "dead#1", meta)
    await broker.heartbeat("dead#1")
    await broker.worker_gone("dead#1")
    for seq, text in enumerate(streamed):
        delta = encode(Delta(channel=channel, reply="r1", seq=seq, text=text))
        await broker.reply_delta(
            channel, "r1", "dead#1", text, Envelope(Kind.DELTA, delta, reply="r1", seq=seq)
        )
    return asked.id


async def test_a_dead_workers_reply_is_continued_from_the_next_word() -> None:
    broker = MemoryBroker()
    async with started(Hub(make_settings(worker_ttl=0.2), broker, EchoLLM(0.0), Metrics())) as core:
        _conn, sink = await core.open("ann")
        await orphan_in(broker, "dm:ann", ["Echo: ", "one two "])
        (done,) = await sink.until(lambda: sink.of("done"), timeout=5)
        assert done["reply"] == "r1" and done["taken_over"] is True
        assert done["text"] == f"Echo: {TEXT}" and done["stop_reason"] == "end"
        seqs = [d["seq"] for d in sink.of("delta")]
        assert seqs == list(range(len(seqs))) and len(seqs) > 2  # the dead worker's, then ours
        assert "".join(d["text"] for d in sink.of("delta")) == done["text"]
        assert await broker.inflight("dm:ann") == []


async def test_exactly_one_claim_wins() -> None:
    broker = MemoryBroker()
    await orphan_in(broker, "dm:ann", ["Echo: "])
    orphan = Orphan("dm:ann", "r1", "dead#1", 0)
    first, second = await asyncio.gather(
        broker.reply_claim(orphan, "a#1"), broker.reply_claim(orphan, "b#1")
    )
    assert [first is not None, second is not None] == [True, False]
    assert await broker.reply_owner("r1") == ("dm:ann", "a#1")


async def test_a_live_worker_keeps_its_replies() -> None:
    broker = MemoryBroker()
    async with started(
        Hub(make_settings(worker_ttl=0.2), broker, EchoLLM(0.05), Metrics())
    ) as core:
        await broker.append("dm:ann", json.dumps({"channel": "dm:ann", "text": TEXT}))
        core.hub.runner.start("dm:ann")
        await asyncio.sleep(0.5)  # more than a TTL: beats went on
        assert await broker.orphans("other#1", 0.2, 10) == []
        assert core.hub.metrics.orphans_swept._value.get() == 0


async def test_takeover_off_closes_the_orphan_as_interrupted() -> None:
    broker = MemoryBroker()
    async with started(
        Hub(make_settings(worker_ttl=0.2, takeover=False), broker, EchoLLM(0.0), Metrics())
    ) as core:
        _conn, sink = await core.open("ann")
        await orphan_in(broker, "dm:ann", ["Echo: ", "one "])
        (done,) = await sink.until(lambda: sink.of("done"), timeout=5)
        assert (done["text"], done["stop_reason"]) == ("Echo: one ", "interrupted")


async def test_a_question_whose_worker_died_before_the_reply_began_is_answered() -> None:
    broker = MemoryBroker()
    async with started(Hub(make_settings(worker_ttl=0.2), broker, EchoLLM(0.0), Metrics())) as core:
        _conn, sink = await core.open("ann")
        body = {"channel": "dm:ann", "text": TEXT, "author": {"id": "ann", "role": "user"}}
        asked = await broker.append(
            "dm:ann", json.dumps(body), start_reply="r2", owner="dead#2"
        )  # stored with its reply in flight, then the worker died before streaming a word
        assert asked is not None
        await broker.worker_gone("dead#2")
        (done,) = await sink.until(lambda: sink.of("done"), timeout=5)
        assert (done["reply"], done["text"], done["taken_over"]) == ("r2", f"Echo: {TEXT}", True)


async def test_a_dead_workers_connections_stop_counting_against_their_users() -> None:
    broker = MemoryBroker()
    assert await broker.slot_take("conn:user:ann", "dead#1|7", 1, 86400, "dead#1")
    await broker.heartbeat("dead#1")
    await broker.worker_gone("dead#1")
    assert await broker.slot_take("conn:user:ann", "probe", 1, 1) is False
    async with started(Hub(make_settings(worker_ttl=0.2), broker, EchoLLM(0.0), Metrics())):
        for _ in range(100):  # swept once this worker has beaten steadily for a TTL
            if await broker.slot_take("conn:user:ann", "probe", 1, 1):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the dead worker's connection slot was never freed")
