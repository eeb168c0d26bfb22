"""hello/welcome, greeting, ping, send/ack/message and the streamed echo reply."""

from __future__ import annotations

from tests.conftest import HubFactory, HubUnderTest


async def test_welcome_lists_user_worker_channels_and_limits(hub: HubUnderTest) -> None:
    client = await hub.connect("alice", None)
    welcome = client.welcome
    assert welcome["user"] == {"id": "alice", "name": "Alice"}
    assert welcome["worker"] == hub.settings.worker_id
    assert welcome["channels"] == ["dm:alice"]
    assert welcome["limits"]["max_text"] == hub.settings.max_text
    assert welcome["resumed"] == {}


async def test_fresh_session_is_greeted_once_per_conversation(hub: HubUnderTest) -> None:
    first = await hub.connect("alice")
    greeting = await first.expect("message", channel="dm:alice")
    assert greeting["author"]["role"] == "system"
    assert "Alice" in greeting["text"]
    # A reload right away does not pile up greetings in the history.
    second = await hub.connect("alice")
    await second.drain()
    await first.send(type="history", channel="dm:alice", ref="h")
    history = await first.expect("history", ref="h")
    assert [m["author"]["role"] for m in history["messages"]] == ["system"]


async def test_ping_gets_pong_with_ref(hub: HubUnderTest) -> None:
    client = await hub.connect("alice")
    await client.send(type="ping", ref="p1")
    assert (await client.expect("pong"))["ref"] == "p1"


async def test_send_is_acked_stored_and_answered_by_streaming_echo(hub: HubUnderTest) -> None:
    client = await hub.connect("alice")
    await client.send(type="send", text="hello *brave* new world", ref="m1")
    ack = await client.expect("ack", ref="m1")
    message = await client.expect("message", id=ack["id"])
    assert message["author"] == {"id": "alice", "name": "Alice", "role": "user"}
    assert message["text"] == "hello *brave* new world"
    assert message["ref"] == "m1"
    deltas, done = await client.reply("dm:alice")
    assert [d["seq"] for d in deltas] == list(range(len(deltas)))
    assert deltas[0]["text"].startswith("Echo:")
    assert "".join(d["text"] for d in deltas) == done["text"] == "Echo: hello *brave* new world"
    assert done["stop_reason"] == "end"
    assert "<em>brave</em>" in done["html"]
    await client.send(type="history", channel="dm:alice", ref="h")
    stored = (await client.expect("history", ref="h"))["messages"]
    assert [m["id"] for m in stored][-2:] == [ack["id"], done["id"]]
    assert stored[-1]["author"]["role"] == "assistant"
    assert stored[-1]["reply"] == done["reply"]
    assert stored[-1]["html"] == done["html"]


async def test_every_tab_of_a_user_gets_the_dm_reply_once(hub: HubUnderTest) -> None:
    tab1 = await hub.connect("alice")
    tab2 = await hub.connect("alice")
    await tab1.drain()
    await tab2.drain()
    await tab1.send(type="send", text="both tabs please", ref="t")
    for tab in (tab1, tab2):
        _deltas, done = await tab.reply("dm:alice")
        assert done["text"] == "Echo: both tabs please"
        await tab.drain()
        assert tab.count("message", text="both tabs please") == 1
        assert tab.count("done", reply=done["reply"]) == 1
        seqs = [f["seq"] for f in tab.received if f["type"] == "delta"]
        assert seqs == list(range(len(seqs)))
    assert tab2.count("ack") == 0


async def test_retried_send_with_same_ref_is_stored_and_answered_once(hub: HubUnderTest) -> None:
    client = await hub.connect("alice")
    await client.send(type="send", text="only once", ref="dup")
    first = await client.expect("ack", ref="dup")
    await client.reply()
    await client.send(type="send", text="only once", ref="dup")
    second = await client.expect("ack", ref="dup")
    assert second["id"] == first["id"]
    await client.drain()
    assert client.count("message", text="only once") == 1
    assert client.count("done") == 1
    await client.send(type="history", channel="dm:alice", ref="h")
    history = await client.expect("history", ref="h")
    assert [m["text"] for m in history["messages"]].count("only once") == 1


async def test_tokens_are_coalesced_into_fewer_deltas_first_piece_at_once(
    start_hub: HubFactory,
) -> None:
    hub = await start_hub(echo_delay=0.001, delta_interval=0.1)
    client = await hub.connect("alice")
    words = " ".join(f"w{i}" for i in range(300))
    await client.send(type="send", text=words, ref="many")
    deltas, done = await client.reply(timeout=30)
    assert deltas[0]["text"] == "Echo: "  # the first piece goes out alone, at once
    assert len(deltas) < 301 / 3  # pieces arrive every ~1 ms, deltas at most every 100 ms
    assert "".join(d["text"] for d in deltas) == done["text"] == f"Echo: {words}"
