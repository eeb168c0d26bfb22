"""The Broker contract: every test runs on MemoryBroker, RedisBroker on fakeredis and on Redis."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from hub.broker.base import (
    AppendResult,
    Broker,
    Envelope,
    Kind,
    OnlinePage,
    PresenceChange,
    ReplyLost,
)
from hub.protocol import frame_from_entry, parse_id
from tests.broker.conftest import WAIT, Backend, Frames, event


def body(channel: str, text: str) -> str:
    return json.dumps({"channel": channel, "text": text}, separators=(",", ":"))


async def sentinel(broker: Broker, frames: Frames, topic: str) -> None:
    """Publish a marker and wait for it: everything published before it has arrived."""
    marker = f'{{"type":"sentinel","n":{len(frames.items)}}}'
    await broker.publish(topic, event(marker))
    await frames.payload(topic, marker)


async def stored(broker: Broker, channel: str, text: str, **kw: object) -> AppendResult:
    result = await broker.append(channel, body(channel, text), **kw)  # type: ignore[arg-type]
    assert result is not None
    return result


async def eventually(check: object, timeout: float = WAIT) -> None:
    """Poll an async predicate until it holds; for state that changes with time alone."""
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]  # noqa: ASYNC110 (nothing to wait on)
            await asyncio.sleep(0.02)


# -- channel logs -------------------------------------------------------------------------
async def test_append_ids_strictly_increase(backend: Backend) -> None:
    broker, _ = await backend.make()
    ids = [(await stored(broker, "room:a", f"m{i}")).id for i in range(30)]
    parsed = [parse_id(i) for i in ids]
    assert all(a < b for a, b in itertools.pairwise(parsed))
    entries, more = await broker.history("room:a", None, 100)
    assert [e.id for e in entries] == ids
    assert not more


async def test_published_frame_is_frame_from_entry_with_stored_id(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("room:a")
    message = body("room:a", 'hello "quoted" ünïcode')
    first = await broker.append("room:a", message)
    done = await broker.append("room:a", message, publish_as="done")
    assert first is not None and done is not None
    await sentinel(broker, frames, "room:a")
    published = frames.payloads("room:a")[:2]
    assert published == [
        frame_from_entry("message", first.id, message),
        frame_from_entry("done", done.id, message),
    ]
    decoded = json.loads(published[0])
    assert decoded["type"] == "message" and decoded["id"] == first.id
    assert decoded["text"] == 'hello "quoted" ünïcode'
    entries, _ = await broker.history("room:a", None, 10)
    assert [(e.id, e.body) for e in entries] == [(first.id, message), (done.id, message)]


async def test_published_frames_carry_their_kind_and_ids(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("room:k")
    first = await stored(broker, "room:k", "hi")
    await broker.reply_begin("room:k", "r7", "w1", "{}")
    delta = Envelope(Kind.DELTA, '{"type":"delta"}', reply="r7", seq=0)
    await broker.reply_delta("room:k", "r7", "w1", "piece", delta)
    done = await stored(broker, "room:k", "piece", publish_as="done", finish_reply="r7")
    await sentinel(broker, frames, "room:k")
    got = [f for t, f in frames.envelopes if t == "room:k"][:3]
    assert [(f.kind, f.id, f.reply, f.seq) for f in got] == [
        (Kind.MESSAGE, first.id, "", -1),
        (Kind.DELTA, "", "r7", 0),
        (Kind.DONE, done.id, "r7", -1),
    ]
    assert all(f.stored == (f.kind is not Kind.DELTA) for f in got)


async def test_dedupe_returns_first_id_and_publishes_once(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("dm:u")
    first = await stored(broker, "dm:u", "once", dedupe="u:ref1")
    again = await broker.append("dm:u", body("dm:u", "once"), dedupe="u:ref1")
    assert again == AppendResult(first.id, duplicate=True)
    assert not first.duplicate
    await sentinel(broker, frames, "dm:u")
    messages = [p for p in frames.payloads("dm:u") if '"type":"message"' in p]
    assert len(messages) == 1
    entries, _ = await broker.history("dm:u", None, 10)
    assert [e.id for e in entries] == [first.id]
    other = await stored(broker, "dm:u", "other", dedupe="u:ref2")
    assert other.id != first.id and not other.duplicate


async def test_dedupe_key_is_scoped_to_its_channel(backend: Backend) -> None:
    broker, _ = await backend.make()
    first = await stored(broker, "dm:u", "a", dedupe="u:ref")
    elsewhere = await stored(broker, "room:x", "a", dedupe="u:ref")
    assert not elsewhere.duplicate
    entries, _ = await broker.history("room:x", None, 10)
    assert [e.id for e in entries] == [elsewhere.id]
    assert (await broker.append("dm:u", body("dm:u", "a"), dedupe="u:ref")) == AppendResult(
        first.id, duplicate=True
    )


async def test_dedupe_expires(backend: Backend) -> None:
    broker, _ = await backend.make()
    first = await stored(broker, "dm:u", "a", dedupe="u:r", dedupe_ttl=0.05)

    async def fresh_again() -> bool:
        result = await broker.append("dm:u", body("dm:u", "a"), dedupe="u:r", dedupe_ttl=0.05)
        return result is not None and not result.duplicate

    await eventually(fresh_again)
    entries, _ = await broker.history("dm:u", None, 10)
    assert entries[0].id == first.id and len(entries) == 2


async def test_finish_reply_once(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("room:a")
    await broker.reply_begin("room:a", "r1", "w1", '{"m":1}')
    await broker.reply_delta(
        "room:a",
        "r1",
        "w1",
        "par",
        Envelope(Kind.DELTA, '{"type":"delta","seq":0}', reply="r1", seq=0),
    )
    done = await broker.append("room:a", body("room:a", "partial"), publish_as="done",
                               finish_reply="r1")  # fmt: skip
    assert done is not None
    assert await broker.inflight("room:a") == []
    assert await broker.reply_owner("r1") is None
    second = await broker.append(
        "room:a", body("room:a", "again"), publish_as="done", finish_reply="r1"
    )
    assert second is None
    await sentinel(broker, frames, "room:a")
    dones = [p for p in frames.payloads("room:a") if p.startswith('{"type":"done"')]
    assert dones == [frame_from_entry("done", done.id, body("room:a", "partial"))]
    entries, _ = await broker.history("room:a", None, 10)
    assert [e.id for e in entries] == [done.id]


async def test_finish_unknown_reply_stores_nothing(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.append("room:a", body("room:a", "x"), finish_reply="nope") is None
    assert await broker.history("room:a", None, 10) == ([], False)


async def test_dedupe_checked_before_finish(backend: Backend) -> None:
    broker, _ = await backend.make()
    await broker.reply_begin("room:a", "r1", "w1", "{}")
    first = await stored(broker, "room:a", "done", dedupe="d", finish_reply="r1")
    again = await broker.append("room:a", body("room:a", "done"), dedupe="d", finish_reply="r1")
    assert again == AppendResult(first.id, duplicate=True)


async def test_history_pages_with_before_limit_more(backend: Backend) -> None:
    broker, _ = await backend.make()
    ids = [(await stored(broker, "room:h", f"m{i}")).id for i in range(7)]
    page, more = await broker.history("room:h", None, 3)
    assert [e.id for e in page] == ids[4:] and more
    page, more = await broker.history("room:h", ids[4], 3)
    assert [e.id for e in page] == ids[1:4] and more
    page, more = await broker.history("room:h", ids[1], 3)
    assert [e.id for e in page] == ids[:1] and not more
    page, more = await broker.history("room:h", ids[0], 3)
    assert page == [] and not more
    page, more = await broker.history("room:h", None, 7)
    assert [e.id for e in page] == ids and not more
    assert json.loads(page[0].body)["text"] == "m0"
    assert await broker.history("room:empty", None, 5) == ([], False)


async def test_history_compares_ids_numerically(backend: Backend) -> None:
    broker, _ = await backend.make()
    ids = [(await stored(broker, "room:n", f"m{i}")).id for i in range(3)]
    ms, _seq = parse_id(ids[0])
    page, more = await broker.history("room:n", f"{ms + 10**6}-0", 10)
    assert [e.id for e in page] == ids and not more
    page, _ = await broker.history("room:n", f"{ms - 1}-99999", 10)
    assert page == []


async def test_history_is_capped_by_history_max(backend: Backend) -> None:
    broker, _ = await backend.make(history_max=10)
    ids = [(await stored(broker, "room:c", f"m{i}")).id for i in range(15)]
    page, more = await broker.history("room:c", None, 100)
    assert [e.id for e in page] == ids[5:] and not more


async def test_replay_after_an_id_gives_exactly_the_later_entries(backend: Backend) -> None:
    broker, _ = await backend.make()
    ids = [(await stored(broker, "room:r", f"m{i}")).id for i in range(6)]
    replay = await broker.replay("room:r", ids[2])
    assert replay is not None
    assert [e.id for e in replay.entries] == ids[3:]
    assert json.loads(replay.entries[0].body)["text"] == "m3"
    assert replay.replies == []
    latest = await broker.replay("room:r", ids[-1])
    assert latest is not None and latest.entries == []
    first = await broker.replay("room:r", ids[0])
    assert first is not None and [e.id for e in first.entries] == ids[1:]


async def test_replay_refuses_what_it_cannot_give(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.replay("room:none", "1-0") is None
    ids = [(await stored(broker, "room:r", f"m{i}")).id for i in range(3)]
    ms, _seq = parse_id(ids[0])
    assert await broker.replay("room:r", f"{ms - 1}-0") is None  # before the epoch
    ms, _seq = parse_id(ids[-1])
    assert await broker.replay("room:r", f"{ms + 60_000}-0") is None  # never issued


async def test_replay_older_than_the_trimmed_part_gives_none(backend: Backend) -> None:
    broker, _ = await backend.make(history_max=10)
    ids = [(await stored(broker, "room:t", f"m{i}")).id for i in range(14)]
    assert await broker.replay("room:t", ids[0]) is None
    assert await broker.replay("room:t", ids[2]) is None
    edge = await broker.replay("room:t", ids[3])  # the highest trimmed id: nothing is missing
    assert edge is not None and [e.id for e in edge.entries] == ids[4:]
    kept = await broker.replay("room:t", ids[8])
    assert kept is not None and [e.id for e in kept.entries] == ids[9:]


async def test_replay_after_the_log_was_lost_gives_none(backend: Backend) -> None:
    broker, _ = await backend.make()
    old = [(await stored(broker, "room:l", f"old{i}")).id for i in range(3)]
    broker = await backend.lose_everything(broker)
    new = [(await stored(broker, "room:l", f"new{i}")).id for i in range(3)]
    assert parse_id(new[0]) > parse_id(old[-1])
    assert await broker.replay("room:l", old[1]) is None
    assert await broker.replay("room:l", old[-1]) is None
    fine = await broker.replay("room:l", new[0])
    assert fine is not None and [e.id for e in fine.entries] == new[1:]


async def test_replay_includes_replies_in_flight(backend: Backend) -> None:
    broker, _ = await backend.make()
    last = await stored(broker, "room:f", "question")
    await broker.reply_begin("room:f", "r1", "w1", '{"author":"a"}')
    for seq, piece in enumerate(["Hel", "lo", " there"]):
        await broker.reply_delta(
            "room:f",
            "r1",
            "w1",
            piece,
            Envelope(Kind.DELTA, f'{{"type":"delta","seq":{seq}}}', reply="r1", seq=seq),
        )
    replay = await broker.replay("room:f", last.id)
    assert replay is not None and replay.entries == []
    [reply] = replay.replies
    assert (reply.reply, reply.channel, reply.worker, reply.meta) == (
        "r1",
        "room:f",
        "w1",
        '{"author":"a"}',
    )
    assert reply.deltas == ["Hel", "lo", " there"]


# -- replies in flight --------------------------------------------------------------------
def delta(reply: str, seq: int) -> Envelope:
    return Envelope(Kind.DELTA, f'{{"type":"delta","seq":{seq}}}', reply=reply, seq=seq)


async def test_inflight_deltas_in_order_once_each(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("room:i")
    await broker.reply_begin("room:i", "live", "w1", "{}")
    await broker.reply_begin("room:i", "other", "w2", "{}")
    await broker.reply_begin("room:other", "elsewhere", "w1", "{}")
    pieces = [f"p{i}" for i in range(25)]
    for seq, piece in enumerate(pieces):
        await broker.reply_delta("room:i", "live", "w1", piece, delta("live", seq))
    # A retry of a delta whose answer was lost is neither kept nor published again.
    await broker.reply_delta("room:i", "live", "w1", "p24", delta("live", 24))
    await sentinel(broker, frames, "room:i")
    deltas = [p for p in frames.payloads("room:i") if '"delta"' in p]
    assert deltas == [f'{{"type":"delta","seq":{seq}}}' for seq in range(25)]
    states = {r.reply: r for r in await broker.inflight("room:i")}
    assert set(states) == {"live", "other"}
    assert states["live"].deltas == pieces
    assert states["other"].worker == "w2" and states["other"].deltas == []


async def test_only_the_owner_streams_and_finishes(backend: Backend) -> None:
    broker, _ = await backend.make()
    await broker.reply_begin("room:o", "r", "w1", "{}")
    with pytest.raises(ReplyLost):
        await broker.reply_delta("room:o", "r", "w2", "x", delta("r", 0))
    with pytest.raises(ReplyLost):
        await broker.reply_delta("room:o", "ghost", "w1", "x", delta("ghost", 0))
    late = await broker.append("room:o", body("room:o", "x"), finish_reply="r", owner="w2")
    assert late is None
    assert await broker.reply_owner("r") == ("room:o", "w1")
    assert await stored(broker, "room:o", "x", finish_reply="r", owner="w1")


async def test_a_message_can_start_its_reply_in_the_same_step(backend: Backend) -> None:
    broker, _ = await backend.make()
    first = await stored(broker, "room:q", "ask", dedupe="q1", start_reply="r5", owner="w1")
    again = await stored(broker, "room:q", "ask", dedupe="q1", start_reply="r6", owner="w1")
    assert again.duplicate and again.id == first.id
    (state,) = await broker.inflight("room:q")
    assert (state.reply, state.worker, json.loads(state.meta)) == ("r5", "w1", {"upto": first.id})
    assert await broker.reply_owner("r5") == ("room:q", "w1")
    await broker.worker_gone("w1")
    (orphan,) = await broker.orphans("w2", 30, 10)
    assert orphan.reply == "r5"


async def test_orphans_of_dead_workers_are_claimed_once(backend: Backend) -> None:
    broker, _ = await backend.make()
    await broker.heartbeat("alive")
    await broker.heartbeat("dead")
    await broker.reply_begin("room:z", "r1", "dead", '{"upto":"1-0"}')
    await broker.reply_delta("room:z", "r1", "dead", "Hel", delta("r1", 0))
    await broker.reply_begin("room:z", "r2", "alive", "{}")
    assert await broker.orphans("alive", 30, 10) == []
    await broker.worker_gone("dead")
    (orphan,) = await broker.orphans("alive", 30, 10)
    assert (orphan.channel, orphan.reply, orphan.worker) == ("room:z", "r1", "dead")
    assert await broker.orphans("dead", 30, 10) == []  # alive is alive
    # Either may win the race (on a cluster each claim first writes its own worker's index,
    # in another slot), but only one.
    claims = await asyncio.gather(
        broker.reply_claim(orphan, "alive"), broker.reply_claim(orphan, "third")
    )
    (won,) = [claim for claim in claims if claim is not None]
    assert won.worker in ("alive", "third")
    assert (won.reply, won.meta, won.deltas) == ("r1", '{"upto":"1-0"}', ["Hel"])
    assert await broker.reply_owner("r1") == ("room:z", won.worker)
    with pytest.raises(ReplyLost):  # the dead worker, back from a freeze, may not stream
        await broker.reply_delta("room:z", "r1", "dead", "lo", delta("r1", 1))
    await broker.reply_delta("room:z", "r1", won.worker, "lo", delta("r1", 1))
    assert await broker.orphans("alive", 30, 10) == []


async def test_reply_owner(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.reply_owner("r9") is None
    await broker.reply_begin("dm:u", "r9", "worker-7", "{}")
    assert await broker.reply_owner("r9") == ("dm:u", "worker-7")
    if backend.shared:
        other, _ = await backend.make()
        assert await other.reply_owner("r9") == ("dm:u", "worker-7")


# -- pub/sub ------------------------------------------------------------------------------
async def test_counted_subscriptions(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.subscribe("room:s")
    await broker.subscribe("room:s")
    await broker.publish("room:s", event("one"))
    await sentinel(broker, frames, "room:s")
    assert frames.payloads("room:s").count("one") == 1
    await broker.unsubscribe("room:s")
    await broker.publish("room:s", event("two"))
    await sentinel(broker, frames, "room:s")
    assert frames.payloads("room:s").count("two") == 1
    await broker.unsubscribe("room:s")
    await broker.subscribe("room:probe")
    await broker.publish("room:s", event("three"))
    await sentinel(broker, frames, "room:probe")
    assert "three" not in frames.payloads("room:s")
    await broker.unsubscribe("room:s")  # one too many: harmless
    await broker.subscribe("room:s")
    await broker.publish("room:s", event("four"))
    await frames.payload("room:s", "four")


async def test_publish_without_subscribing_reaches_subscribers(backend: Backend) -> None:
    broker, frames = await backend.make()
    await broker.publish("room:nobody", event("lost"))  # no one listens: no error
    if not backend.shared:
        await broker.subscribe("room:p")
        await broker.publish("room:p", event("hi"))
        await frames.payload("room:p", "hi")
        return
    publisher, publisher_frames = await backend.make()
    await broker.subscribe("room:p")
    await publisher.publish("room:p", event("hi"))
    await publisher.append("room:p", body("room:p", "stored"))
    await frames.until(lambda: len(frames.payloads("room:p")) == 2)
    assert frames.payloads("room:p")[0] == "hi"
    assert json.loads(frames.payloads("room:p")[1])["text"] == "stored"
    assert publisher_frames.items == []


async def test_two_workers_fan_out_by_topic(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip("MemoryBroker is one process: there is no second worker to reach")
    one, one_frames = await backend.make()
    two, two_frames = await backend.make()
    await one.subscribe("room:both")
    await two.subscribe("room:both")
    await two.subscribe("worker:two")
    await one.publish("room:both", event("hello all"))
    await one.publish("worker:two", event("stop r1"))
    await one_frames.payload("room:both", "hello all")
    await two_frames.until(lambda: len(two_frames.items) == 2)
    assert sorted(two_frames.items) == [("room:both", "hello all"), ("worker:two", "stop r1")]
    await two.unsubscribe("room:both")
    await one.publish("room:both", event("after"))
    await one.publish("worker:two", event("marker"))
    await two_frames.payload("worker:two", "marker")
    await one_frames.payload("room:both", "after")
    assert "after" not in two_frames.payloads("room:both")


async def test_ping(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.ping() is True


# -- rooms and presence -------------------------------------------------------------------
async def test_room_membership(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.room_join("lobby", "alice", "Alice")
    assert not await broker.room_join("lobby", "alice", "Alice A.")
    assert await broker.room_join("lobby", "bob", "Bob")
    assert await broker.room_join("attic", "alice", "Alice A.")
    assert await broker.room_size("lobby") == 2
    assert await broker.user_rooms("alice") == ["attic", "lobby"]
    assert await broker.room_leave("lobby", "alice")
    assert not await broker.room_leave("lobby", "alice")
    assert await broker.room_size("lobby") == 1
    assert await broker.user_rooms("alice") == ["attic"]
    assert await broker.room_size("nowhere") == 0
    assert await broker.user_rooms("nobody") == []


async def online(broker: Broker, room: str) -> list[str]:
    """Every online member id of a room, read page by page (pages of 2)."""
    ids: list[str] = []
    after = None
    for _ in range(100):
        page = await broker.presence_page(room, after, 2)
        ids += [uid for uid, _name in page.members]
        assert page.online >= len(ids)
        if not page.more:
            return ids
        after = ids[-1]
    raise AssertionError("presence pages never ended")


async def test_presence_is_online_while_any_worker_holds_the_user(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert (await broker.presence_enter("lobby", "al", "Alice", "w1")) == PresenceChange(True, 1)
    assert (await broker.presence_enter("lobby", "al", "Alice", "w2")) == PresenceChange(False, 1)
    assert (await broker.presence_enter("lobby", "al", "Alice", "w2")) == PresenceChange(False, 1)
    assert (await broker.presence_enter("lobby", "bo", "Bob", "w1")).online == 2
    assert (await broker.presence_exit("lobby", "al", "w1")) == PresenceChange(False, 2)
    assert (await broker.presence_exit("lobby", "al", "w2")) == PresenceChange(True, 1)
    assert (await broker.presence_exit("lobby", "al", "w2")) == PresenceChange(False, 1)
    assert await online(broker, "lobby") == ["bo"]
    assert (await broker.presence_page("empty", None, 10)) == OnlinePage([], False, 0)


async def test_presence_pages_by_name_then_id_each_member_once(backend: Backend) -> None:
    broker, _ = await backend.make()
    people = [("u3", "bob"), ("u1", "Bob"), ("u2", "alice"), ("u9", "Zed"), ("u4", "carol")]
    for uid, name in people:
        await broker.presence_enter("big", uid, name, "w1")
    assert await online(broker, "big") == ["u2", "u1", "u3", "u4", "u9"]
    first = await broker.presence_page("big", None, 3)
    assert first.members == [("u2", "alice"), ("u1", "Bob"), ("u3", "bob")]
    assert first.more and first.online == 5
    await broker.presence_exit("big", "u3", "w1")  # the page's last member left meanwhile
    rest = await broker.presence_page("big", "u3", 10)
    assert rest.members == [("u4", "carol"), ("u9", "Zed")] and not rest.more


async def test_a_dead_workers_users_are_swept_by_exactly_one_worker(backend: Backend) -> None:
    broker, _ = await backend.make()
    other = (await backend.make())[0] if backend.shared else broker
    await broker.presence_enter("lobby", "al", "Alice", "w1")
    await broker.presence_enter("lobby", "bo", "Bob", "w1")
    await broker.presence_enter("lobby", "bo", "Bob", "w2")
    await broker.presence_enter("attic", "al", "Alice", "w1")
    first, second = await asyncio.gather(broker.presence_sweep("w1"), other.presence_sweep("w1"))
    swept = first or second
    assert swept == {"attic": (["al"], 0), "lobby": (["al"], 1)}
    assert (first, second).count({}) == 1
    assert await online(broker, "lobby") == ["bo"]
    assert await broker.presence_sweep("w1") == {}


# -- limits -------------------------------------------------------------------------------
async def test_rate_take_is_a_token_bucket(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert [await broker.rate_take("u:alice", rate=0.5, burst=3) for _ in range(3)] == [0, 0, 0]
    wait = await broker.rate_take("u:alice", rate=0.5, burst=3)
    assert 0 < wait <= 2.0
    assert await broker.rate_take("u:bob", rate=0.5, burst=3) == 0
    assert await broker.rate_take("u:fast", rate=50.0, burst=1) == 0

    async def refilled() -> bool:
        return await broker.rate_take("u:fast", rate=50.0, burst=1) == 0

    await eventually(refilled)


# -- tickets ------------------------------------------------------------------------------
async def test_a_ticket_is_read_once_and_expires(backend: Backend) -> None:
    broker, _ = await backend.make()
    await broker.ticket_put("t1", "alice", ttl=30)
    await broker.ticket_put("t2", "bob", ttl=0.05)
    assert await broker.ticket_take("t1") == "alice"
    assert await broker.ticket_take("t1") is None
    assert await broker.ticket_take("never") is None
    await asyncio.sleep(0.2)
    assert await broker.ticket_take("t2") is None


async def test_a_heartbeat_tells_how_long_its_worker_was_unheard(backend: Backend) -> None:
    broker, _ = await backend.make()
    assert await broker.heartbeat("w-gap") == 0
    await asyncio.sleep(0.3)
    gap = await broker.heartbeat("w-gap")
    assert 0.25 <= gap < 5  # the worker judges from this whether others took it for dead
    assert await broker.heartbeat("w-gap") < gap
