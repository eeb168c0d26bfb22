"""Claude through the whole hub: the real SDK against a loopback Messages API, seen by WebSocket users."""

from __future__ import annotations

import itertools

import pytest

from hub.llm.anthropic import AnthropicLLM
from tests.conftest import HubFactory, HubUnderTest
from tests.support.fake_anthropic import FakeAnthropic, Reply, fake_anthropic  # noqa: F401


def _claude(fake: FakeAnthropic, **overrides: object) -> AnthropicLLM:
    options: dict[str, object] = {
        "model": "claude-test",
        "system_prompt": "You are the hub's assistant.",
        "max_tokens": 256,
        "max_retries": 2,
        "read_timeout": 2.0,
        "api_key": "test-key",
        "base_url": fake.url,
    }
    options.update(overrides)
    return AnthropicLLM(**options)  # type: ignore[arg-type]


@pytest.fixture
async def claude_hub(start_hub: HubFactory, fake_anthropic: FakeAnthropic) -> HubUnderTest:  # noqa: F811
    return await start_hub(llm_instance=_claude(fake_anthropic))


async def test_room_reply_reaches_every_member_exactly_with_attribution(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(Reply(pieces=["Hi ", "Ann", " and ", "**Bob**", "!"]))
    ann, bob = await claude_hub.connect("ann"), await claude_hub.connect("bob")
    for client in (ann, bob):
        await client.send(type="join", room="lab")
        await client.expect("joined", room="lab")
    await bob.send(type="send", channel="room:lab", text="morning all", ref="b")
    await bob.expect("ack", ref="b")
    await ann.send(type="send", channel="room:lab", text="@assistant greet us", ref="a")
    for client in (ann, bob):
        deltas, done = await client.reply("room:lab")
        assert "".join(d["text"] for d in deltas) == done["text"] == "Hi Ann and **Bob**!"
        assert "<strong>Bob</strong>" in done["html"]
        assert done["usage"]["input_tokens"] == 12
    body = fake_anthropic.requests[-1].body
    assert body["model"] == "claude-test"
    system_text = " ".join(block["text"] for block in body["system"])
    assert "room" in system_text.lower()
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    sent = str(body["messages"])
    assert "[Bob]: morning all" in sent and "[Ann]: @assistant greet us" in sent
    await ann.send(type="history", channel="room:lab", ref="h")
    stored = (await ann.expect("history", ref="h"))["messages"][-1]
    assert stored["text"] == "Hi Ann and **Bob**!"
    assert stored["usage"]["input_tokens"] == 12


async def test_stop_closes_the_upstream_stream_and_keeps_partial_text(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(Reply(pieces=["Once ", "upon "], stall=True, ping_every=0.2))
    ann = await claude_hub.connect("ann")
    await ann.send(type="send", text="tell me a story", ref="s")
    streamed = ""
    while streamed != "Once upon ":  # the fake stalls after these pieces
        delta = await ann.expect("delta")
        streamed += delta["text"]
    await ann.send(type="stop", reply=delta["reply"])
    _deltas, done = await ann.reply()
    assert done["stop_reason"] == "stopped"
    assert done["text"] == "Once upon "
    await fake_anthropic.wait_disconnect(1, within=5)
    assert fake_anthropic.disconnects >= 1


async def test_overloaded_api_is_retried_then_the_user_is_told(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(*[Reply.status_error(529, retry_after="0") for _ in range(3)])
    ann = await claude_hub.connect("ann")
    await ann.send(type="send", text="hello?", ref="s")
    error = await ann.expect("error", code="llm_unavailable")
    assert error["channel"] == "dm:ann"
    assert fake_anthropic.attempts == 3
    _deltas, done = await ann.reply()
    assert done["stop_reason"] == "error"
    assert done["reply"] == error["reply"]


async def test_error_event_mid_stream_ends_with_error_and_keeps_the_partial_text(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(
        Reply(pieces=["Part", "ial"], error={"type": "overloaded_error", "message": "Overloaded"})
    )
    ann = await claude_hub.connect("ann")
    await ann.send(type="send", text="go", ref="s")
    error = await ann.expect("error", channel="dm:ann")
    assert error["code"] in ("llm_error", "llm_unavailable")
    _deltas, done = await ann.reply()
    assert done["stop_reason"] == "error"
    assert done["text"] == "Partial"
    await ann.send(type="history", channel="dm:ann", ref="h")
    stored = (await ann.expect("history", ref="h"))["messages"][-1]
    assert (stored["text"], stored["stop_reason"]) == ("Partial", "error")


async def test_refused_key_is_a_clear_error_and_the_hub_keeps_serving(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(
        Reply.status_error(401, type="authentication_error", message="invalid x-api-key"),
        Reply(pieces=["Back ", "again"]),
    )
    ann = await claude_hub.connect("ann")
    await ann.send(type="send", text="first", ref="1")
    error = await ann.expect("error", code="llm_unavailable")
    assert "key" in error["message"].lower()
    await ann.reply()
    await ann.send(type="send", text="second", ref="2")
    _deltas, done = await ann.reply()
    assert (done["text"], done["stop_reason"]) == ("Back again", "end")


async def test_max_tokens_is_the_stop_reason(
    claude_hub: HubUnderTest,
    fake_anthropic: FakeAnthropic,  # noqa: F811
) -> None:
    fake_anthropic.script(Reply(pieces=["cut"], stop_reason="max_tokens"))
    ann = await claude_hub.connect("ann")
    await ann.send(type="send", text="write a novel", ref="s")
    _deltas, done = await ann.reply()
    assert (done["text"], done["stop_reason"]) == ("cut", "max_tokens")
