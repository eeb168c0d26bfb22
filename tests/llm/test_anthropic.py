"""The Claude provider against a loopback Messages API, through the real ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.llm import create_llm
from hub.llm.anthropic import DECLINED, NO_CREDENTIALS, AnthropicLLM
from hub.llm.base import Finish, LLMRequest, Turn
from hub.llm.continuation import CONTINUE_PROMPT
from hub.llm.errors import parse_retry_after
from hub.protocol import Usage
from hub.settings import load_settings
from tests.llm.helpers import collect, dm
from tests.support.fake_anthropic import FakeAnthropic, Reply

MODEL = "claude-test-model"
KEY = "test-key"


def make_llm(fake: FakeAnthropic, **overrides: Any) -> AnthropicLLM:
    """A provider pointed at the fake, with an explicit key so no environment is read."""
    options: dict[str, Any] = {
        "model": MODEL,
        "system_prompt": "Be brief.",
        "max_tokens": 64,
        "api_key": KEY,
        "base_url": fake.url,
        "max_retries": 2,
        "read_timeout": 5.0,
        "timeout": 5.0,
    }
    options.update(overrides)
    return AnthropicLLM(**options)


def sent_key(headers: dict[str, str]) -> str:
    """The API key a request carried (``x-api-key``, or a bearer token in SDK 2.x)."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


@pytest.fixture
async def llm(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicLLM]:
    provider = make_llm(fake_anthropic)
    yield provider
    await provider.aclose()


async def test_text_is_assembled_exactly_and_usage_reported(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM, caplog: pytest.LogCaptureFixture
) -> None:
    pieces = ["Hel", "lo, ", "**wor**", "ld", " — ✓\n"]
    fake_anthropic.script(
        Reply(
            pieces=pieces,
            usage={
                "input_tokens": 21,
                "cache_read_input_tokens": 700,
                "cache_creation_input_tokens": 30,
            },
        )
    )
    with caplog.at_level(logging.INFO, logger="hub.llm.anthropic"):
        outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is None
    assert outcome.pieces == pieces
    assert outcome.finish == Finish(
        "end",
        usage=Usage(
            input_tokens=21,
            output_tokens=len(pieces),
            cache_read_input_tokens=700,
            cache_creation_input_tokens=30,
        ),
    )
    assert any("cache read 700, cache write 30" in r.getMessage() for r in caplog.records)


async def test_dm_request_carries_model_system_and_alternating_roles(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    await collect(llm.stream(dm("first", "answer", "second", "another answer", "third")))
    assert fake_anthropic.attempts == 1
    seen = fake_anthropic.requests[0]
    assert seen.path == "/v1/messages"
    assert sent_key(seen.headers) == KEY
    body = seen.body
    assert body["model"] == MODEL
    assert body["max_tokens"] == 64
    assert body["stream"] is True
    assert "temperature" not in body
    assert body["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    texts = [block["text"] for m in body["messages"] for block in m["content"]]
    assert texts == ["first", "answer", "second", "another answer", "third"]


async def test_cache_breakpoints_on_system_and_end_of_stable_prefix(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    await collect(llm.stream(dm("q1", "a1", "q2", "a2", "q3")))
    messages = fake_anthropic.requests[0].body["messages"]
    marked = [
        (i, j)
        for i, message in enumerate(messages)
        for j, block in enumerate(message["content"])
        if "cache_control" in block
    ]
    # The last block before the newest user message: what the next request repeats.
    assert marked == [(3, 0)]
    assert messages[3]["content"][0] == {
        "type": "text",
        "text": "a2",
        "cache_control": {"type": "ephemeral"},
    }


async def test_first_message_has_only_the_system_breakpoint(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    await collect(llm.stream(dm("hello")))
    body = fake_anthropic.requests[0].body
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


async def test_an_empty_system_prompt_sends_no_system(fake_anthropic: FakeAnthropic) -> None:
    llm = make_llm(fake_anthropic, system_prompt="")
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.error is None
    assert "system" not in fake_anthropic.requests[0].body


async def test_room_request_attributes_each_author(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    request = LLMRequest(
        "room:lobby",
        [
            Turn("user", "I like tea", author="Alice"),
            Turn("user", "I prefer coffee", author="Bob"),
            Turn("assistant", "Both are fine."),
            Turn("user", "@assistant who likes coffee?", author="Carol"),
        ],
        room=True,
        members=["Alice", "Bob", "Carol"],
    )
    outcome = await collect(llm.stream(request))
    assert outcome.error is None
    body = fake_anthropic.requests[0].body
    system = body["system"][0]["text"]
    assert system.startswith("Be brief.")
    assert "room" in system and "several people" in system
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["text"] for b in messages[0]["content"]] == [
        "[Alice]: I like tea",
        "[Bob]: I prefer coffee",
    ]
    assert [b["text"] for b in messages[2]["content"]] == [
        "(People in this room: Alice, Bob, Carol.)",
        "[Carol]: @assistant who likes coffee?",
    ]
    assert messages[1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


async def test_history_is_trimmed_to_the_token_budget(fake_anthropic: FakeAnthropic) -> None:
    llm = make_llm(fake_anthropic, context_tokens=1000)
    texts = [f"message {i:02d} " + "z" * 388 for i in range(30)]
    texts.append("latest question")
    await collect(llm.stream(dm(*texts)))
    await llm.aclose()
    messages = fake_anthropic.requests[0].body["messages"]
    sent = [b["text"] for m in messages for b in m["content"]]
    assert sent[-1] == "latest question"
    assert len(sent) < 31
    assert sent == texts[len(texts) - len(sent) :]
    assert messages[0]["role"] == "user"
    estimate = sum(len(t) / 4 + 4 for t in sent) + len("Be brief.") / 4 + 4
    assert estimate <= 1000


async def test_temperature_goes_in_the_body_when_set(fake_anthropic: FakeAnthropic) -> None:
    llm = make_llm(fake_anthropic, temperature=0.3)
    await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert fake_anthropic.requests[0].body["temperature"] == 0.3


async def test_max_tokens_ends_with_stop_reason_max_tokens(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=["cut ", "off"], stop_reason="max_tokens"))
    outcome = await collect(llm.stream(dm("long essay please")))
    assert outcome.text == "cut off"
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "max_tokens"


async def test_a_bare_refusal_still_gives_a_reply(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=[], stop_reason="refusal"))
    outcome = await collect(llm.stream(dm("something unsafe")))
    assert outcome.pieces == [DECLINED]
    assert outcome.finish is not None and outcome.finish.stop_reason == "end"


async def test_aclose_closes_the_upstream_response(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=["first", "second"], stall=True, ping_every=0.05))
    stream = llm.stream(dm("tell me a long story"))
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == "first"
    assert fake_anthropic.disconnects == 0
    await stream.aclose()
    await fake_anthropic.wait_disconnect(1)
    assert fake_anthropic.disconnects == 1


async def test_cancelling_the_consumer_closes_the_upstream_response(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=["one"], stall=True, ping_every=0.05))
    got_first = asyncio.Event()
    pieces: list[str | Finish] = []

    async def consume() -> None:
        async for item in llm.stream(dm("go on")):
            pieces.append(item)
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_anthropic.wait_disconnect(1)
    assert pieces == ["one"]


@pytest.mark.parametrize(
    ("status", "etype"),
    [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error"), (503, "api_error")],
)
async def test_retries_then_llm_unavailable_with_retry_after(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM, status: int, etype: str
) -> None:
    fake_anthropic.default = Reply.status_error(status, etype, "try later", retry_after="0.01")
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_anthropic.attempts == 1 + 2
    assert outcome.pieces == []
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.retry_after == pytest.approx(0.01)
    assert outcome.error.message.endswith(".")


async def test_retry_cures_a_passing_overload(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(
        Reply.status_error(529, retry_after="0"), Reply(pieces=["after ", "retry"])
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is None
    assert outcome.text == "after retry"
    assert fake_anthropic.attempts == 2


async def test_max_retries_setting_bounds_attempts(fake_anthropic: FakeAnthropic) -> None:
    llm = make_llm(fake_anthropic, max_retries=0)
    fake_anthropic.default = Reply.status_error(529, retry_after="0")
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert fake_anthropic.attempts == 1
    assert outcome.error is not None and outcome.error.code == "llm_unavailable"


async def test_a_long_retry_after_fails_at_once(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.default = Reply.status_error(429, "rate_limit_error", retry_after="120")
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_anthropic.attempts == 1
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.retry_after == 120
    assert "try again in 120 s" in outcome.error.message


@pytest.mark.parametrize(
    ("status", "etype", "code"),
    [
        (429, "rate_limit_error", "enforced_spend_limit_reached"),
        (429, "billing_error", None),
        (402, "billing_error", "linked_organization_spend_limit_reached"),
    ],
)
async def test_spend_limit_fails_at_once_with_a_clear_message(
    fake_anthropic: FakeAnthropic,
    llm: AnthropicLLM,
    caplog: pytest.LogCaptureFixture,
    status: int,
    etype: str,
    code: str | None,
) -> None:
    fake_anthropic.default = Reply.status_error(
        status, etype, "spend limit reached", retry_after="0", code=code
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_anthropic.attempts == 1
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert "spend limit" in outcome.error.message
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_error_event_mid_stream_raises_llm_error_after_the_pieces(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(
        Reply(pieces=["partial ", "text"], error={"type": "overloaded_error", "message": "x"})
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.pieces == ["partial ", "text"]
    assert outcome.finish is None
    assert outcome.error is not None
    assert outcome.error.code == "llm_error"
    assert "overloaded_error" in outcome.error.message
    assert fake_anthropic.attempts == 1


async def test_invalid_key_is_a_clear_error_and_later_requests_still_work(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_anthropic.script(
        Reply.status_error(401, "authentication_error", "invalid x-api-key"),
        Reply(pieces=["fine ", "now"]),
    )
    with caplog.at_level(logging.INFO):
        outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.message.startswith(
        "The assistant is not available: the server's API key was refused"
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "ANTHROPIC_API_KEY" in errors[0].getMessage()
    assert fake_anthropic.attempts == 1

    again = await collect(llm.stream(dm("hi again")))
    assert again.error is None
    assert again.text == "fine now"


async def test_stalled_stream_ends_after_the_read_timeout(fake_anthropic: FakeAnthropic) -> None:
    llm = make_llm(fake_anthropic, read_timeout=0.3)
    fake_anthropic.script(Reply(pieces=["so far ", "so good"], stall=True))
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.pieces == ["so far ", "so good"]
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert "stopped responding" in outcome.error.message
    await fake_anthropic.wait_disconnect(1)


async def test_no_answer_at_all_is_retried_then_unavailable(
    fake_anthropic: FakeAnthropic,
) -> None:
    llm = make_llm(fake_anthropic, read_timeout=0.2, max_retries=1)
    fake_anthropic.default = Reply(stall_before_headers=True)
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert fake_anthropic.attempts == 2
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"


async def test_rejected_request_is_an_llm_error(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.default = Reply.status_error(400, "invalid_request_error", "prompt is too long")
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_anthropic.attempts == 1
    assert outcome.error is not None
    assert outcome.error.code == "llm_error"
    assert "prompt is too long" in outcome.error.message


async def test_unknown_model_tells_the_operator(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_anthropic.default = Reply.status_error(404, "not_found_error", "model: nope")
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is not None and outcome.error.code == "llm_unavailable"
    assert any("HUB_ANTHROPIC_MODEL" in r.getMessage() for r in caplog.records)


async def test_unreachable_server_is_llm_unavailable(fake_anthropic: FakeAnthropic) -> None:
    url = fake_anthropic.url
    await fake_anthropic.close()
    llm = make_llm(fake_anthropic, base_url=url, max_retries=0)
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"


async def test_settings_and_the_sdk_environment_are_honoured(
    fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake_anthropic.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "key-from-env")
    settings = load_settings(
        anthropic_model="claude-from-settings",
        system_prompt="Settings prompt.",
        max_tokens=77,
        llm_max_retries=0,
    )
    assert settings.llm_name == "anthropic"
    llm = create_llm(settings)
    assert isinstance(llm, AnthropicLLM)
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.error is None
    seen = fake_anthropic.requests[0]
    assert sent_key(seen.headers) == "key-from-env"
    assert seen.body["model"] == "claude-from-settings"
    assert seen.body["max_tokens"] == 77
    assert seen.body["system"][0]["text"] == "Settings prompt."


@pytest.mark.parametrize("config_dir", [False, True])
async def test_no_credentials_at_all_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config_dir: bool,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    if config_dir:
        # An existing config dir without profiles makes the SDK raise CredentialsError.
        monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
    llm = AnthropicLLM(model=MODEL, system_prompt="", max_tokens=8, base_url="http://127.0.0.1:9")
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.message == NO_CREDENTIALS
    logged = [r.getMessage() for r in caplog.records]
    assert any("ANTHROPIC_API_KEY" in line for line in logged)
    assert any("could not load credentials" in line for line in logged) == config_dir


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0


# -- continuing a reply another worker started (takeover) ---------------------------------
def cut_off(partial: str) -> LLMRequest:
    request = dm("Say hello to the world")
    return LLMRequest(channel=request.channel, turns=request.turns, partial=partial)


def last_turns(fake: FakeAnthropic, index: int = -1) -> list[tuple[str, str]]:
    """(role, text) of the last two messages of a request."""
    out = []
    for message in fake.requests[index].body["messages"][-2:]:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(b["text"] for b in content)
        out.append((message["role"], text))
    return out


async def test_a_partial_reply_is_continued_from_a_prefilled_assistant_turn(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=["ld", "!"]))
    outcome = await collect(llm.stream(cut_off("Hello, wor")))
    assert outcome.text == "ld!" and outcome.finish is not None
    assert last_turns(fake_anthropic) == [
        ("user", "Say hello to the world"),
        ("assistant", "Hello, wor"),
    ]


async def test_the_prefill_is_sent_trimmed_and_the_join_keeps_one_space(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM
) -> None:
    fake_anthropic.script(Reply(pieces=[" ", " world", "!"]))
    outcome = await collect(llm.stream(cut_off("Hello, ")))
    assert fake_anthropic.attempts == 1  # the fake refuses trailing whitespace, as the API does
    assert last_turns(fake_anthropic)[-1] == ("assistant", "Hello,")
    assert "Hello, " + outcome.text == "Hello, world!"


async def test_a_model_that_refuses_prefill_is_asked_to_continue_the_text(
    fake_anthropic: FakeAnthropic, llm: AnthropicLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_anthropic.refuse_prefill = True
    fake_anthropic.script(Reply(pieces=["world", "!"]))
    with caplog.at_level(logging.INFO, logger="hub.llm.anthropic"):
        outcome = await collect(llm.stream(cut_off("Hello, ")))
    assert outcome.error is None and "Hello, " + outcome.text == "Hello, world!"
    assert fake_anthropic.attempts == 2
    assert last_turns(fake_anthropic, 0)[-1] == ("assistant", "Hello,")
    assert last_turns(fake_anthropic, 1) == [("assistant", "Hello,"), ("user", CONTINUE_PROMPT)]
    assert "refuses a prefilled turn" in caplog.text
