"""Resume by last id: exactly the missed messages, the streamed part of a reply, then live frames."""

from __future__ import annotations

from tests.conftest import HubFactory, HubUnderTest


async def test_resume_replays_exactly_the_missed_messages(hub: HubUnderTest) -> None:
    ann = await hub.connect("ann")
    await ann.send(type="join", room="lobby")
    await ann.expect("joined")
    bob = await hub.connect("bob")
    await bob.send(type="join", room="lobby")
    await bob.expect("joined")
    await bob.send(type="send", channel="room:lobby", text="seen", ref="0")
    seen = await ann.expect("message", text="seen")
    await ann.close()
    for i in range(5):
        await bob.send(type="send", channel="room:lobby", text=f"missed {i}", ref=f"m{i}")
        await bob.expect("ack", ref=f"m{i}")
    back = await hub.connect("ann", resume={"room:lobby": seen["id"]})
    assert back.welcome["resumed"] == {"room:lobby": True}
    frames = await back.drain()
    texts = [f["text"] for f in frames if f["type"] == "message" and f["channel"] == "room:lobby"]
    assert texts == [f"missed {i}" for i in range(5)]
    await bob.send(type="send", channel="room:lobby", text="live", ref="live")
    await back.expect("message", text="live")


async def test_resume_mid_reply_gets_the_streamed_part_then_the_rest(start_hub: HubFactory) -> None:
    hub = await start_hub(echo_delay=0.03)
    tab = await hub.connect("ann")
    await tab.drain()
    text = " ".join(f"w{i}" for i in range(40))
    await tab.send(type="send", text=text, ref="long")
    message = await tab.expect("message", ref="long")
    await tab.expect("delta", seq=2)
    await tab.close()
    back = await hub.connect("ann", resume={"dm:ann": message["id"]})
    assert back.welcome["resumed"] == {"dm:ann": True}
    deltas, done = await back.reply("dm:ann")
    assert [d["seq"] for d in deltas] == list(range(len(deltas)))
    assert "".join(d["text"] for d in deltas) == done["text"] == f"Echo: {text}"
    await back.drain()
    assert back.count("done") == 1
    assert back.count("message", ref="long") == 0


async def test_resume_after_the_reply_ended_gets_it_as_a_message(hub: HubUnderTest) -> None:
    tab = await hub.connect("ann")
    await tab.send(type="send", text="quick", ref="q")
    message = await tab.expect("message", ref="q")
    _deltas, done = await tab.reply()
    await tab.close()
    back = await hub.connect("ann", resume={"dm:ann": message["id"]})
    frames = await back.drain()
    assert [(f["type"], f["id"]) for f in frames] == [("message", done["id"])]
    assert frames[0]["author"]["role"] == "assistant"
    assert frames[0]["text"] == "Echo: quick"


async def test_resume_from_before_the_kept_log_says_resumed_false(start_hub: HubFactory) -> None:
    hub = await start_hub(history_max=10)
    ann = await hub.connect("ann")
    await ann.send(type="join", room="busy")
    await ann.expect("joined")
    await ann.send(type="send", channel="room:busy", text="first", ref="f")
    first = await ann.expect("ack", ref="f")
    for i in range(15):
        await ann.send(type="send", channel="room:busy", text=f"n{i}", ref=f"n{i}")
        await ann.expect("ack", ref=f"n{i}")
    back = await hub.connect("ann", resume={"room:busy": first["id"]})
    assert back.welcome["resumed"] == {"room:busy": False}
    frames = await back.drain()
    assert not [f for f in frames if f["type"] == "message" and f["channel"] == "room:busy"]


async def test_resume_of_a_log_lost_in_a_restart_says_resumed_false(start_hub: HubFactory) -> None:
    first_life = await start_hub()
    ann = await first_life.connect("ann")
    await ann.send(type="send", text="before the restart", ref="b")
    old = await ann.expect("ack", ref="b")
    second_life = await start_hub(secret=first_life.settings.secret_value())
    fresh = await second_life.connect("ann")
    await fresh.send(type="send", text="after", ref="a")
    await fresh.expect("ack", ref="a")
    back = await second_life.connect("ann", resume={"dm:ann": old["id"]})
    assert back.welcome["resumed"] == {"dm:ann": False}


async def test_resume_of_a_channel_the_user_may_not_read_is_refused(hub: HubUnderTest) -> None:
    bob = await hub.connect("bob")
    await bob.send(type="send", text="secret", ref="s")
    ack = await bob.expect("ack", ref="s")
    eve = await hub.connect("eve", resume={"dm:bob": ack["id"]})
    assert eve.welcome["resumed"] == {"dm:bob": False}
    frames = await eve.drain()
    assert not [f for f in frames if f.get("channel") == "dm:bob"]
