"""Rooms: join/leave, membership that belongs to the user, presence, fan-out, access rules."""

from __future__ import annotations

from tests.conftest import HubUnderTest


async def test_three_users_in_a_room_each_get_each_message_and_reply_once(
    hub: HubUnderTest,
) -> None:
    users = ["ann", "bob", "cat"]
    clients = [await hub.connect(u) for u in users]
    for client in clients:
        await client.send(type="join", room="lobby", ref="j")
        await client.expect("joined", room="lobby")
    for client in clients:
        await client.drain()
    for i, client in enumerate(clients):
        await client.send(
            type="send", channel="room:lobby", text=f"hi from {users[i]}", ref=f"s{i}"
        )
        await client.expect("ack", ref=f"s{i}")
    await clients[0].send(type="send", channel="room:lobby", text="@assistant say hi", ref="ask")
    for client in clients:
        deltas, done = await client.reply("room:lobby")
        assert done["text"] == "Echo: say hi"
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))
        await client.drain()
        for name in users:
            assert client.count("message", channel="room:lobby", text=f"hi from {name}") == 1
        assert client.count("done") == 1
        assert client.count("delta") == len(deltas)


async def test_room_message_without_mention_gets_no_reply(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.send(type="join", room="quiet")
    await client.expect("joined")
    await client.send(type="send", channel="room:quiet", text="just people talking", ref="x")
    await client.expect("ack", ref="x")
    frames = await client.drain(0.5)
    assert not [f for f in frames if f["type"] in ("delta", "done")]


async def test_presence_follows_joins_disconnects_and_leaves(hub: HubUnderTest) -> None:
    ann = await hub.connect("ann")
    await ann.send(type="join", room="lobby")
    joined = await ann.expect("joined", room="lobby")
    assert joined["members"] == [{"id": "ann", "name": "Ann"}]
    assert (joined["online"], joined["more"]) == (1, False)
    bob = await hub.connect("bob")
    await bob.send(type="join", room="lobby")
    await bob.expect("joined", room="lobby")
    await ann.expect_online("lobby", {"ann", "bob"})
    await bob.close()
    await ann.expect_online("lobby", {"ann"})
    bob = await hub.connect("bob")
    assert "room:lobby" in bob.welcome["channels"]
    snapshot = await bob.expect("presence", room="lobby")
    assert snapshot["members"] == [{"id": "ann", "name": "Ann"}, {"id": "bob", "name": "Bob"}]
    await ann.expect_online("lobby", {"ann", "bob"})
    await bob.send(type="leave", room="lobby", ref="l")
    await bob.expect("left", room="lobby")
    await ann.expect_online("lobby", {"ann"})
    diffs = [f for f in ann.received if f["type"] == "presence"]
    assert diffs and all("members" not in f and "online" in f for f in diffs)


async def test_membership_belongs_to_the_user_across_tabs_and_sessions(hub: HubUnderTest) -> None:
    tab1 = await hub.connect("ann")
    tab2 = await hub.connect("ann")
    await tab1.send(type="join", room="team", ref="j")
    await tab1.expect("joined", room="team")
    other_tab = await tab2.expect("joined", room="team")
    assert other_tab["room"] == "team"
    bob = await hub.connect("bob")
    await bob.send(type="join", room="team")
    await bob.expect("joined")
    await bob.send(type="send", channel="room:team", text="hello team", ref="b")
    for tab in (tab1, tab2):
        await tab.expect("message", channel="room:team", text="hello team")
    later = await hub.connect("ann")
    assert later.welcome["channels"] == ["dm:ann", "room:team"]
    await tab2.send(type="leave", room="team")
    for tab in (tab1, tab2, later):
        await tab.expect("left", room="team")
    await bob.send(type="send", channel="room:team", text="anyone?", ref="b2")
    await bob.expect("ack", ref="b2")
    for tab in (tab1, tab2, later):
        frames = await tab.drain(0.3)
        assert not [f for f in frames if f.get("text") == "anyone?"]


async def test_joined_carries_recent_history(hub: HubUnderTest) -> None:
    bob = await hub.connect("bob")
    await bob.send(type="join", room="lobby")
    await bob.expect("joined")
    for i in range(3):
        await bob.send(type="send", channel="room:lobby", text=f"m{i}", ref=f"r{i}")
        await bob.expect("ack", ref=f"r{i}")
    ann = await hub.connect("ann")
    await ann.send(type="join", room="lobby")
    joined = await ann.expect("joined", room="lobby")
    assert [m["text"] for m in joined["history"]] == ["m0", "m1", "m2"]


async def test_nobody_reads_or_writes_another_users_dm(hub: HubUnderTest) -> None:
    mallory = await hub.connect("mallory")
    await mallory.send(type="send", channel="dm:alice", text="psst", ref="s")
    assert (await mallory.expect("error", ref="s"))["code"] == "forbidden"
    await mallory.send(type="history", channel="dm:alice", ref="h")
    assert (await mallory.expect("error", ref="h"))["code"] == "forbidden"
    resp = await hub.session.get(
        f"{hub.url}/api/history",
        params={"channel": "dm:alice"},
        headers={"Authorization": f"Bearer {hub.token('mallory')}"},
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"


async def test_a_room_is_written_and_read_only_after_joining(hub: HubUnderTest) -> None:
    ann = await hub.connect("ann")
    await ann.send(type="send", channel="room:closed", text="hi", ref="s")
    error = await ann.expect("error", ref="s")
    assert error["code"] == "forbidden"
    assert "Join" in error["message"]


async def test_leaving_a_room_one_is_not_in_is_not_found(hub: HubUnderTest) -> None:
    ann = await hub.connect("ann")
    await ann.send(type="leave", room="nowhere", ref="l")
    assert (await ann.expect("error", ref="l"))["code"] == "not_found"
