"""Messages on the embedded broker: text checks, access, posting, history pages, stop."""

from __future__ import annotations

import pytest

from hub.broker.base import Entry
from hub.broker.memory import MemoryBroker
from hub.core.hub import Hub
from hub.core.messages import check_text, newest_within
from hub.errors import FrameError
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from hub.protocol import Author, HistoryRequest, Join, Ping, Send, Stop
from tests.core.conftest import CoreHub, make_settings, started


def test_a_message_must_say_something_and_fit() -> None:
    check_text("hi", 2, "r")
    with pytest.raises(FrameError) as long:
        check_text("hi!", 2, "r")
    assert (long.value.code, long.value.ref) == ("too_long", "r")
    with pytest.raises(FrameError) as empty:
        check_text(" \n", 10, None)
    assert empty.value.code == "invalid"


def test_a_history_page_keeps_the_newest_that_fit_and_never_nothing() -> None:
    entries = [Entry(f"{i}-0", "x" * size) for i, size in enumerate([5, 4, 3])]
    assert newest_within(entries, 6) == entries[2:]
    assert newest_within(entries, 7) == entries[1:]
    assert newest_within(entries, 12) == entries
    assert newest_within(entries[:1], 1) == entries[:1]  # one too big still goes


async def test_a_dm_is_its_owners_and_a_room_its_members(core: CoreHub) -> None:
    ann, _sink = await core.open("ann")
    messages = core.hub.messages
    await messages.check_access(ann.user, "dm:ann", ann)
    with pytest.raises(FrameError, match="private"):
        await messages.check_access(ann.user, "dm:bob", ann)
    with pytest.raises(FrameError, match="Join the room"):
        await messages.check_access(ann.user, "room:club", None)
    await core.hub.handle(ann, Join(type="join", room="club"))
    await messages.check_access(ann.user, "room:club", None)  # a member, seen in the broker


async def test_a_resent_ref_is_stored_once_and_acked_with_the_same_id(core: CoreHub) -> None:
    ann, sink = await core.open("ann")
    send = Send(type="send", channel="dm:ann", text="once", ref="s1")
    await core.hub.handle(ann, send)
    await core.hub.handle(ann, send)
    acks = await sink.until(lambda: len(sink.of("ack")) == 2 and sink.of("ack"))
    assert acks[0]["id"] == acks[1]["id"]
    texts = [m["text"] for m in (await core.hub.messages.history(ann.user, "dm:ann", None, 10))[0]]
    assert texts.count("once") == 1


async def test_a_room_message_asks_the_assistant_only_when_it_is_mentioned(
    core: CoreHub,
) -> None:
    ann, sink = await core.open("ann")
    await core.hub.handle(ann, Join(type="join", room="lobby"))
    posted, reply = await core.hub.messages.post(ann.user, "room:lobby", "hi all", None)
    assert not posted.duplicate and reply is None
    _posted, reply = await core.hub.messages.post(ann.user, "room:lobby", "@assistant hi", None)
    assert reply is not None
    (done,) = await sink.until(lambda: sink.of("done"))
    assert done["reply"] == reply


async def test_a_draining_worker_takes_no_new_messages(core: CoreHub) -> None:
    ann, _sink = await core.open("ann")
    core.hub.draining = True
    with pytest.raises(FrameError) as refused:
        await core.hub.messages.post(ann.user, "dm:ann", "late", "s9")
    assert (refused.value.code, refused.value.ref) == ("unavailable", "s9")


async def test_a_backends_assistant_message_is_stored_with_its_html(core: CoreHub) -> None:
    _ann, sink = await core.open("ann")
    author = Author(id="assistant", name="Assistant", role="assistant")
    stored = await core.hub.messages.publish("dm:ann", author, "**hello**")
    frame = await sink.until(lambda: [m for m in sink.of("message") if m["id"] == stored])
    assert "<strong>hello</strong>" in frame[0]["html"]


async def test_one_history_page_at_a_time_per_connection(core: CoreHub) -> None:
    ann, sink = await core.open("ann")
    ask = HistoryRequest(type="history", channel="dm:ann", ref="h1")
    await core.hub.handle(ann, ask)
    assert ann.history_pending is not None  # still on its way: the sink has not taken it yet
    await core.hub.handle(ann, ask.model_copy(update={"ref": "h2"}))
    (page,) = await sink.until(lambda: sink.of("history"))
    (error,) = await sink.until(lambda: sink.of("error"))
    assert page["ref"] == "h1" and (error["code"], error["ref"]) == ("rate_limited", "h2")


async def test_stop_ends_a_reply_running_here_and_says_when_none_streams() -> None:
    slow = Hub(make_settings(), MemoryBroker(), EchoLLM(0.05), Metrics())
    async with started(slow) as core:
        ann, sink = await core.open("ann")
        _posted, reply = await slow.messages.post(ann.user, "dm:ann", "one two three four", None)
        assert reply is not None
        await sink.until(lambda: sink.of("delta"))
        await slow.handle(ann, Stop(type="stop", reply=reply, ref="x1"))
        (done,) = await sink.until(lambda: sink.of("done"))
        assert (done["reply"], done["stop_reason"]) == (reply, "stopped")
        await slow.handle(ann, Stop(type="stop", reply=reply, ref="x2"))
        (error,) = await sink.until(lambda: sink.of("error"))
        assert error["code"] == "not_found"


async def test_ping_is_answered_with_its_ref(core: CoreHub) -> None:
    ann, sink = await core.open("ann")
    await core.hub.handle(ann, Ping(type="ping", ref="p1"))
    (pong,) = await sink.until(lambda: sink.of("pong"))
    assert pong["ref"] == "p1"
