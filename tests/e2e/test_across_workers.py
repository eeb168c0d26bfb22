"""Across workers, through nginx: every connection of a user and every member of a room, on
whichever of three workers, gets each frame once; stop, history and presence work from any
worker; a client that drops mid-reply resumes on another worker without a gap or a double.

One cluster for the module (nothing here breaks it); each test uses its own users and rooms.
"""

from __future__ import annotations

import aiohttp
import pytest

from deploy.cluster import Cluster
from tests.e2e.support import (
    WAIT,
    WORKERS,
    E2EClient,
    all_got_text,
    assert_everyone_got_everything,
    check_deltas_per_connection,
    close_all,
    connect_on,
    echo_of,
    history_all,
    join_all,
    replies_streaming,
    send_reliably,
    settle,
    token,
    wait_until,
    words,
)
from tests.support.wsclient import WsClient, connect

pytestmark = pytest.mark.slow


async def one_tab_per_worker(cluster: Cluster, user_id: str) -> list[E2EClient]:
    return [await connect_on(cluster, user_id, w, f"{user_id}@{w}") for w in WORKERS]


async def one_member_per_worker(cluster: Cluster, room: str, prefix: str) -> list[E2EClient]:
    members = [await connect_on(cluster, f"{prefix}{i + 1}", w) for i, w in enumerate(WORKERS)]
    await join_all(members, room)
    return members


async def test_dm_reply_reaches_every_tab_on_every_worker_once(shared_cluster: Cluster) -> None:
    tabs = await one_tab_per_worker(shared_cluster, "ada")
    channel = "dm:ada"
    try:
        # The greeting was stored before the last tab connected: count what comes after it.
        before = {m["id"] for m in await history_all(tabs[0], channel)}
        for i, sender in enumerate(tabs):  # the reply runs on the sender's worker: each in turn
            text = words(20, f"t{i}w")
            await send_reliably(sender, text, None, f"dm-{i}")
            await wait_until(
                all_got_text(tabs, channel, echo_of(text)), f"the reply to message {i} on every tab"
            )
        await settle(tabs)
        stored = [m for m in await history_all(tabs[0], channel) if m["id"] not in before]
        assert len(stored) == 6
        assert_everyone_got_everything(tabs, channel, stored)
        replies = [m["reply"] for m in stored if m["author"]["role"] == "assistant"]
        assert len(replies) == 3
        for tab in tabs:
            assert tab.workers == [tab.label.split("@")[1]], "a tab reconnected"
            for reply in replies:
                assert len(tab.dones(reply)) == 1
                check_deltas_per_connection(tab, reply)
                assert tab.deltas(reply), f"{tab.label} saw no delta of {reply}"
    finally:
        await close_all(tabs)


async def test_room_messages_and_replies_reach_every_member_on_every_worker_once(
    shared_cluster: Cluster,
) -> None:
    room, channel = "across", "room:across"
    members = await one_member_per_worker(shared_cluster, room, "rm")
    try:
        sent = 0
        for i, member in enumerate(members):
            await send_reliably(member, f"hello from {member.user_id}", channel, f"plain-{i}")
            sent += 1
        asks = {}
        for i, member in enumerate(members):  # one streamed reply generated on each worker
            text = f"@assistant {words(15, f'q{i}w')}"
            asks[await send_reliably(member, text, channel, f"ask-{i}")] = echo_of(text)
            sent += 2
            # The echo answers the latest message when the reply starts: ask again once it
            # streams, so the three replies overlap but each answers its own question.
            await wait_until(replies_streaming(members[0], channel, i + 1), f"reply {i} streaming")
        await wait_until(
            lambda: all(
                sum(f["type"] == "done" for f in m.stored_frames(channel)) == 3 for m in members
            ),
            "three replies on every member",
        )
        await settle(members)
        stored = await history_all(members[1], channel)
        assert len(stored) == sent
        assert_everyone_got_everything(members, channel, stored)
        replies = {m["reply"]: m["text"] for m in stored if m["author"]["role"] == "assistant"}
        assert sorted(replies.values()) == sorted(asks.values())
        for member in members:
            for reply, text in replies.items():
                (done,) = member.dones(reply)
                assert done["text"] == text and done["stop_reason"] == "end"
                check_deltas_per_connection(member, reply)
                assert "".join(d["text"] for d in member.deltas(reply)) == text
    finally:
        await close_all(members)


async def test_stop_through_another_worker_stops_the_reply(shared_cluster: Cluster) -> None:
    generating = await connect_on(shared_cluster, "sam", "hub1", "sam@hub1")
    stopping = await connect_on(shared_cluster, "sam", "hub2", "sam@hub2")
    tabs = [generating, stopping]
    channel = "dm:sam"
    try:
        text = words(300, "s")  # about 6 s of streaming: stopped long before its end
        await send_reliably(generating, text, None, "long")  # the reply runs on hub1
        await wait_until(
            lambda: any(d["seq"] >= 3 for d in stopping.raw if d.get("type") == "delta"),
            "a few deltas on the tab on hub2",
        )
        reply = next(f["reply"] for f in stopping.raw if f.get("type") == "delta")
        await stopping.stop(reply)  # through hub2, to hub1 by the worker topic
        await wait_until(lambda: all(t.dones(reply) for t in tabs), "the done on both tabs")
        await settle(tabs)
        for tab in tabs:
            (done,) = tab.dones(reply)
            assert done["stop_reason"] == "stopped"
            assert done["text"] and echo_of(text).startswith(done["text"])
            assert done["text"] != echo_of(text)
            check_deltas_per_connection(tab, reply)
        stored = [m for m in await history_all(stopping, channel) if m.get("reply") == reply]
        assert len(stored) == 1
        assert stored[0]["text"] == done["text"]
        assert stored[0]["stop_reason"] == "stopped"
        assert stored[0]["id"] == done["id"]
    finally:
        await close_all(tabs)


async def test_history_and_presence_read_the_same_from_every_worker(
    shared_cluster: Cluster,
) -> None:
    room, channel = "same", "room:same"
    members = await one_member_per_worker(shared_cluster, room, "hp")
    try:
        for i in range(5):
            await send_reliably(members[i % 3], f"note {i}", channel, f"n{i}")
        await wait_until(
            lambda: all(len(m.ids(channel)) == 5 for m in members), "five notes everywhere"
        )
        over_ws = [await history_all(m, channel) for m in members]
        assert [m.workers[-1] for m in members] == list(WORKERS)
        assert over_ws[0] == over_ws[1] == over_ws[2]
        assert [m["text"] for m in over_ws[0]] == [f"note {i}" for i in range(5)]
        # Over HTTP, on each worker's own port: pinned on purpose, to ask each worker in turn.
        bearer = {"Authorization": f"Bearer {token(shared_cluster, 'hp1')}"}
        over_http = []
        async with aiohttp.ClientSession() as session:
            for index in range(3):
                url = shared_cluster.worker(index).url + "/api/history"
                async with session.get(url, params={"channel": channel}, headers=bearer) as resp:
                    assert resp.status == 200
                    over_http.append((await resp.json())["messages"])
        assert over_http == [over_ws[0]] * 3
        everyone = {m.user_id for m in members}
        assert all(m.presence(room) == everyone for m in members)
        await members[2].close()  # the member on hub3 goes: every worker tells the others
        await wait_until(
            lambda: all(m.presence(room) == everyone - {"hp3"} for m in members[:2]),
            "presence without hp3 on hub1 and hub2",
        )
    finally:
        await close_all(members)


async def _connect_resuming_elsewhere(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    user_id: str,
    resume: dict[str, str],
    avoid: str,
) -> WsClient:
    """Reconnect through nginx with ``resume`` until a worker other than ``avoid`` answers."""
    landed = []
    for _ in range(15):
        client = await connect(session, cluster.ws_url, token(cluster, user_id), resume)
        if client.welcome["worker"] != avoid:
            return client
        landed.append(client.welcome["worker"])
        await client.close()
    raise AssertionError(f"every reconnect landed on {avoid}: {landed}")


async def test_resume_mid_reply_on_another_worker_has_no_gap_and_no_double(
    shared_cluster: Cluster,
) -> None:
    room, channel = "resume", "room:resume"
    bob = await connect_on(shared_cluster, "rs-bob", "hub2")
    async with aiohttp.ClientSession() as session:
        ann = await connect(session, shared_cluster.ws_url, token(shared_cluster, "rs-ann"))
        first_worker = ann.welcome["worker"]
        try:
            await ann.send(type="join", room=room, ref="j")
            await ann.expect("joined", ref="j")
            await bob.join(room, timeout=WAIT)
            await ann.expect_online(room, {"rs-ann", "rs-bob"})
            await send_reliably(bob, "before", channel, "b0")
            await ann.expect("message", channel=channel, text="before")
            text = "@assistant " + words(250, "r")  # about 5 s of streaming, on hub2
            asked = await send_reliably(bob, text, channel, "ask")
            last = await ann.expect("message", channel=channel, id=asked)
            await ann.expect("delta", channel=channel, seq=3)
            await ann.close()  # ann drops mid-reply; she saw everything up to ``asked``
            missed = [await send_reliably(bob, f"missed {i}", channel, f"m{i}") for i in range(4)]
            reply = next(f["reply"] for f in bob.raw if f.get("type") == "delta")
            back = await _connect_resuming_elsewhere(
                shared_cluster, session, "rs-ann", {channel: last["id"]}, first_worker
            )
            streamed_at_resume = len(bob.deltas(reply))
            assert not bob.dones(reply), "the reply ended before ann came back; make it longer"
            assert back.welcome["resumed"] == {channel: True}
            await back.expect("done", timeout=WAIT, channel=channel, reply=reply)
            await settle([bob])
            await back.drain(0.5)
            frames = back.received[1:]  # every frame of the new connection after its welcome
        finally:
            await close_all([bob])
            await ann.close()
    stored = [f for f in frames if f["type"] in ("message", "done") and f["channel"] == channel]
    ids = [f["id"] for f in stored]
    assert len(ids) == len(set(ids)), f"a message came twice: {ids}"
    (done,) = [f for f in stored if f["type"] == "done"]
    assert ids == [*missed, done["id"]]  # the missed messages in order, then the reply's end
    deltas = [f for f in frames if f["type"] == "delta" and f["reply"] == reply]
    assert [d["seq"] for d in deltas] == list(range(len(deltas)))
    assert "".join(d["text"] for d in deltas) == done["text"] == echo_of(text)
    assert done["stop_reason"] == "end"
    order = [f["type"] for f in frames if f["type"] in ("message", "delta", "done")]
    assert order == ["message"] * len(missed) + ["delta"] * len(deltas) + ["done"]
    assert 0 < streamed_at_resume < len(deltas)  # the replayed part, then the live rest
