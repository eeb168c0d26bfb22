"""Sessions and rooms: welcome, greeting, resume, join/leave on every connection of the user."""

from __future__ import annotations

import json

from hub.broker.base import Envelope, Kind
from hub.errors import FrameError
from hub.protocol import Delta, Join, Leave, Send, encode
from tests.core.conftest import CoreHub, ListSink
from tests.support.presence_view import online_view


def online(sink: ListSink) -> list[str]:
    """Who the client sees online in the lobby now (snapshot, then diffs)."""
    return sorted(online_view(sink.frames, "lobby") or {})


async def test_a_fresh_session_is_welcomed_and_greeted_once(core: CoreHub) -> None:
    _conn, sink = await core.open("ann")
    welcome = sink.of("welcome")[0]
    assert welcome["channels"] == ["dm:ann"] and welcome["worker"] == "w1"
    await sink.until(lambda: sink.of("message"))
    await core.open("ann")
    entries, _more = await core.hub.broker.history("dm:ann", None, 10)
    assert len(entries) == 1  # the second fresh session found the dm not empty and said nothing


async def test_the_greeting_never_lands_between_a_question_and_its_answer(core: CoreHub) -> None:
    conn, sink = await core.open("ann")
    await core.hub.messages.post(conn.user, "dm:ann", "a question", None, ask=False)
    await sink.until(lambda: len(sink.of("message")) == 2)
    _again, again = await core.open("ann")  # a reload before the answer came
    assert again.of("welcome")[0]["last_ids"] == {"dm:ann": sink.of("message")[1]["id"]}
    entries, _more = await core.hub.broker.history("dm:ann", None, 10)
    assert [json.loads(e.body)["text"] for e in entries][1:] == ["a question"]


async def test_a_fresh_session_gets_replies_in_flight_from_their_start(core: CoreHub) -> None:
    broker = core.hub.broker
    await broker.reply_begin("dm:ann", "r1", "w1", "{}")
    for seq, piece in enumerate(["Once ", "upon "]):
        delta = Delta(channel="dm:ann", reply="r1", seq=seq, text=piece)
        frame = Envelope(Kind.DELTA, encode(delta), reply="r1", seq=seq)
        await broker.reply_delta("dm:ann", "r1", "w1", piece, frame)
    _conn, sink = await core.open("ann")
    assert [(d["seq"], d["text"]) for d in sink.of("delta")] == [(0, "Once "), (1, "upon ")]
    assert sink.frames[0]["type"] == "welcome"


async def test_resume_replays_exactly_what_came_after(core: CoreHub) -> None:
    conn, sink = await core.open("ann")
    for text in ("one", "two", "three"):
        await core.hub.messages.post(conn.user, "dm:ann", text, None, ask=False)
    await sink.until(lambda: len(sink.of("message")) == 4)
    after = sink.of("message")[1]["id"]
    _conn, resumed = await core.open("ann", resume={"dm:ann": after})
    await resumed.until(lambda: len(resumed.of("message")) == 2)
    assert resumed.of("welcome")[0]["resumed"] == {"dm:ann": True}
    assert [f["text"] for f in resumed.of("message")] == ["two", "three"]


async def test_join_reaches_every_connection_of_the_user(core: CoreHub) -> None:
    tab1, sink1 = await core.open("ann")
    _tab2, sink2 = await core.open("ann")
    await core.hub.handle(tab1, Join(type="join", room="lobby", ref="j1"))
    for sink in (sink1, sink2):
        joined = await sink.until(lambda s=sink: s.of("joined"))
        assert joined[0]["room"] == "lobby"
    assert sink1.of("joined")[0]["ref"] == "j1"
    assert await core.hub.broker.user_rooms("ann") == ["lobby"]


async def test_members_see_each_other_online_and_leaving(core: CoreHub) -> None:
    ann, ann_sink = await core.open("ann")
    bob, _bob_sink = await core.open("bob")
    await core.hub.handle(ann, Join(type="join", room="lobby"))
    await core.hub.handle(bob, Join(type="join", room="lobby"))
    await ann_sink.until(lambda: online(ann_sink) == ["ann", "bob"])
    await core.hub.handle(bob, Leave(type="leave", room="lobby"))
    await ann_sink.until(lambda: online(ann_sink) == ["ann"])


async def test_leaving_a_room_one_is_not_in_says_so(core: CoreHub) -> None:
    ann, sink = await core.open("ann")
    await core.hub.handle(ann, Leave(type="leave", room="nowhere", ref="l1"))
    error = (await sink.until(lambda: sink.of("error")))[0]
    assert (error["code"], error["ref"]) == ("not_found", "l1")


async def test_a_room_is_for_its_members(core: CoreHub) -> None:
    ann, sink = await core.open("ann")
    await core.hub.handle(ann, Send(type="send", channel="room:club", text="hi", ref="s1"))
    error = (await sink.until(lambda: sink.of("error")))[0]
    assert error["code"] == "forbidden" and "Join the room" in error["message"]
    try:
        await core.hub.messages.post(ann.user, "dm:bob", "peek", None)
    except FrameError as exc:
        assert exc.code == "forbidden"
    else:
        raise AssertionError("another user's dm accepted a post")
