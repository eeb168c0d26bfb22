"""stop, history paging and rate limits."""

from __future__ import annotations

from tests.conftest import HubFactory, HubUnderTest


async def test_stop_ends_the_reply_at_once_and_keeps_the_partial_text(
    start_hub: HubFactory,
) -> None:
    hub = await start_hub(echo_delay=0.05)
    client = await hub.connect("ann")
    other_tab = await hub.connect("ann")
    words = " ".join(f"w{i}" for i in range(100))
    await client.send(type="send", text=words, ref="long")
    first = await client.expect("delta", seq=1)
    await other_tab.send(type="stop", reply=first["reply"], ref="stop")
    deltas, done = await client.reply()
    assert done["stop_reason"] == "stopped"
    assert done["text"] == "".join(d["text"] for d in deltas)
    assert 0 < len(done["text"]) < len(f"Echo: {words}")
    await client.send(type="history", channel="dm:ann", ref="h")
    stored = (await client.expect("history", ref="h"))["messages"][-1]
    assert stored["id"] == done["id"]
    assert stored["stop_reason"] == "stopped"
    assert stored["text"] == done["text"]


async def test_stop_of_an_unknown_reply_is_not_found(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.send(type="stop", reply="r-nope", ref="s")
    assert (await client.expect("error", ref="s"))["code"] == "not_found"


async def test_history_pages_backwards_with_before(start_hub: HubFactory) -> None:
    hub = await start_hub()
    ann = await hub.connect("ann")
    await ann.send(type="join", room="log")
    await ann.expect("joined")
    ids = []
    for i in range(7):
        await ann.send(type="send", channel="room:log", text=f"m{i}", ref=f"m{i}")
        ids.append((await ann.expect("ack", ref=f"m{i}"))["id"])
    await ann.send(type="history", channel="room:log", limit=3, ref="p1")
    page1 = await ann.expect("history", ref="p1")
    assert [m["text"] for m in page1["messages"]] == ["m4", "m5", "m6"]
    assert page1["more"] is True
    await ann.send(
        type="history", channel="room:log", limit=3, before=page1["messages"][0]["id"], ref="p2"
    )
    page2 = await ann.expect("history", ref="p2")
    assert [m["text"] for m in page2["messages"]] == ["m1", "m2", "m3"]
    await ann.send(
        type="history", channel="room:log", limit=3, before=page2["messages"][0]["id"], ref="p3"
    )
    page3 = await ann.expect("history", ref="p3")
    assert [m["text"] for m in page3["messages"]] == ["m0"]
    assert page3["more"] is False
    assert [m["id"] for m in page3["messages"] + page2["messages"] + page1["messages"]] == ids


async def test_sending_too_fast_is_rate_limited_with_retry_after(start_hub: HubFactory) -> None:
    hub = await start_hub(rate=0.5, rate_burst=3)
    ann = await hub.connect("ann")
    await ann.send(type="join", room="fast")
    await ann.expect("joined")
    for i in range(3):
        await ann.send(type="send", channel="room:fast", text=f"m{i}", ref=f"m{i}")
        await ann.expect("ack", ref=f"m{i}")
    await ann.send(type="send", channel="room:fast", text="one too many", ref="x")
    error = await ann.expect("error", ref="x")
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after"] <= 2.0
    await ann.send(type="history", channel="room:fast", ref="h")
    history = await ann.expect("history", ref="h")
    assert "one too many" not in [m["text"] for m in history["messages"]]
