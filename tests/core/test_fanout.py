"""Fan-out: subscriptions follow local members, stored frames reach each member once, in order."""

from __future__ import annotations

import asyncio
import json

from hub.broker.base import Envelope, Kind
from hub.broker.memory import MemoryBroker
from hub.core.hub import Hub
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from hub.protocol import frame_from_entry
from tests.core.conftest import CoreHub, make_settings


def stored(channel: str, entry_id: str, text: str) -> Envelope:
    body = json.dumps({"channel": channel, "text": text}, separators=(",", ":"))
    return Envelope(Kind.MESSAGE, frame_from_entry("message", entry_id, body), entry_id)


async def test_the_first_member_subscribes_and_the_last_unsubscribes(core: CoreHub) -> None:
    broker = core.hub.broker
    assert isinstance(broker, MemoryBroker)
    one, _ = await core.open("ann")
    two, _ = await core.open("ann")
    assert broker.subscribed()["dm:ann"] == 1
    await core.close(one)
    assert broker.subscribed()["dm:ann"] == 1
    await core.close(two)
    assert "dm:ann" not in broker.subscribed()


async def test_a_stored_frame_seen_before_is_not_delivered_again(core: CoreHub) -> None:
    _conn, sink = await core.open("ann")
    fanout = core.hub.fanout
    fanout.deliver("dm:ann", stored("dm:ann", "9000000000000-0", "first"))
    fanout.deliver("dm:ann", stored("dm:ann", "9000000000000-0", "first again"))
    fanout.deliver("dm:ann", stored("dm:ann", "8999999999999-5", "older"))
    fanout.deliver("dm:ann", stored("dm:ann", "9000000000000-1", "second"))
    await sink.until(lambda: any(f.get("text") == "second" for f in sink.frames))
    texts = [f["text"] for f in sink.of("message") if "author" not in f]
    assert texts == ["first", "second"]


async def test_frames_that_are_not_stored_always_pass(core: CoreHub) -> None:
    _conn, sink = await core.open("ann")
    for seq in range(3):
        payload = json.dumps({"type": "delta", "channel": "dm:ann", "reply": "r", "seq": seq})
        core.hub.fanout.deliver("dm:ann", Envelope(Kind.DELTA, payload, reply="r", seq=seq))
    await sink.until(lambda: len(sink.of("delta")) == 3)


async def test_catch_up_delivers_what_was_stored_while_frames_were_lost(core: CoreHub) -> None:
    _conn, sink = await core.open("ann")
    await sink.until(lambda: sink.of("message"))  # the greeting
    broker = core.hub.broker
    assert isinstance(broker, MemoryBroker)
    broker._subs.pop("dm:ann")  # the link is lost: appends are stored but not heard
    for text in ("lost one", "lost two"):
        await broker.append("dm:ann", json.dumps({"channel": "dm:ann", "text": text}))
    broker._subs["dm:ann"] = 1
    await core.hub.fanout.catch_up()
    await sink.until(lambda: len(sink.of("message")) == 3)
    await core.hub.fanout.catch_up()  # a second catch-up repeats nothing
    assert [f["text"] for f in sink.of("message")[1:]] == ["lost one", "lost two"]


async def test_catch_up_delivers_the_deltas_streamed_while_frames_were_lost() -> None:
    broker = MemoryBroker()
    hub = Hub(make_settings(), broker, EchoLLM(0.01), Metrics())
    await hub.start()
    core = CoreHub(hub)
    try:
        conn, sink = await core.open("ann")
        text = " ".join(f"w{i}" for i in range(40))
        await hub.messages.post(conn.user, "dm:ann", text, None)
        await sink.until(lambda: len(sink.of("delta")) >= 2)
        broker._subs.pop("dm:ann")  # the link is lost: deltas are kept but not heard
        heard = len(sink.of("delta"))

        async with asyncio.timeout(5):  # a few deltas streamed unheard
            for _ in range(500):
                if sum(len(s.deltas) for s in await broker.inflight("dm:ann")) >= heard + 3:
                    break
                await asyncio.sleep(0.01)
        broker._subs["dm:ann"] = 1
        await hub.fanout.catch_up()
        (done,) = await sink.until(lambda: sink.of("done"))
        deltas = sink.of("delta")
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))
        assert "".join(d["text"] for d in deltas) == done["text"] == f"Echo: {text}"
    finally:
        for conn in core.conns:
            conn.close(1000, "")
        await hub.close()


async def test_a_connection_resumed_during_a_blink_gets_nothing_twice(core: CoreHub) -> None:
    _first, sink = await core.open("ann")
    (greeting,) = await sink.until(lambda: sink.of("message"))
    broker = core.hub.broker
    assert isinstance(broker, MemoryBroker)
    broker._subs.pop("dm:ann")  # the link is lost; a second tab opens meanwhile and resumes
    for text in ("lost one", "lost two"):
        await broker.append("dm:ann", json.dumps({"channel": "dm:ann", "text": text}))
    _second, resumed = await core.open("ann", resume={"dm:ann": greeting["id"]})
    await resumed.until(lambda: len(resumed.of("message")) == 2)
    broker._subs["dm:ann"] = 1
    await core.hub.fanout.catch_up()
    await sink.until(lambda: len(sink.of("message")) == 3)
    await core.hub.messages.post(_second.user, "dm:ann", "after", None, ask=False)
    await resumed.until(lambda: any(f["text"] == "after" for f in resumed.of("message")))
    assert [f["text"] for f in resumed.of("message")] == ["lost one", "lost two", "after"]
    assert [f["text"] for f in sink.of("message")[1:]] == ["lost one", "lost two", "after"]


async def test_a_live_frame_that_arrives_after_a_resume_gave_it_is_not_sent_again(
    core: CoreHub,
) -> None:
    _first, sink = await core.open("ann")
    (greeting,) = await sink.until(lambda: sink.of("message"))
    broker = core.hub.broker
    assert isinstance(broker, MemoryBroker)
    broker._subs.pop("dm:ann")  # its publish is still on its way to this worker
    body = json.dumps({"channel": "dm:ann", "text": "late"})
    late = await broker.append("dm:ann", body)
    assert late is not None
    broker._subs["dm:ann"] = 1
    _second, resumed = await core.open("ann", resume={"dm:ann": greeting["id"]})
    await resumed.until(lambda: resumed.of("message"))
    core.hub.fanout.deliver("dm:ann", stored("dm:ann", late.id, "late"))  # it arrives now
    await sink.until(lambda: len(sink.of("message")) == 2)
    await core.hub.messages.post(_second.user, "dm:ann", "after", None, ask=False)
    await resumed.until(lambda: any(f["text"] == "after" for f in resumed.of("message")))
    assert [f["text"] for f in resumed.of("message")] == ["late", "after"]
