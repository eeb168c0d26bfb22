"""The OpenAI-compatible provider against a loopback chat.completions API, real ``openai`` SDK."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from hub.llm import create_llm
from hub.llm.base import Finish, LLMRequest, Turn
from hub.llm.continuation import CONTINUE_PROMPT
from hub.llm.openai import MISSING_EXTRA, OpenAILLM
from hub.protocol import Usage
from hub.settings import load_settings
from tests.llm.helpers import collect, dm
from tests.support.fake_openai import FakeOpenAI, Reply

MODEL = "local-test-model"


def make_llm(fake: FakeOpenAI, **overrides: Any) -> OpenAILLM:
    """A provider pointed at the fake."""
    options: dict[str, Any] = {
        "model": MODEL,
        "base_url": fake.base_url,
        "system_prompt": "Be brief.",
        "max_tokens": 64,
        "api_key": "test-key",
        "max_retries": 2,
        "read_timeout": 5.0,
        "timeout": 5.0,
    }
    options.update(overrides)
    return OpenAILLM(**options)


@pytest.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAILLM]:
    provider = make_llm(fake_openai)
    yield provider
    await provider.aclose()


async def test_text_is_assembled_exactly_and_usage_reported(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    pieces = ["Hel", "lo, ", "wor", "ld ✓"]
    fake_openai.script(
        Reply(
            pieces=pieces,
            stop_reason="stop",
            usage={"input_tokens": 20, "cache_read_input_tokens": 64},
        )
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is None
    assert outcome.pieces == pieces
    assert outcome.finish == Finish(
        "end",
        usage=Usage(input_tokens=20, output_tokens=len(pieces), cache_read_input_tokens=64),
    )


async def test_request_carries_model_system_and_roles(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    await collect(llm.stream(dm("first", "answer", "second")))
    seen = fake_openai.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer test-key"
    body = seen.body
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["max_tokens"] == 64
    assert body["stream_options"] == {"include_usage": True}
    assert "temperature" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second"},
    ]


async def test_room_request_attributes_each_author(fake_openai: FakeOpenAI, llm: OpenAILLM) -> None:
    request = LLMRequest(
        "room:kitchen",
        [
            Turn("user", "pizza?", author="Ann"),
            Turn("user", "yes!", author="Ben"),
            Turn("user", "@assistant which topping?", author="Ann"),
        ],
        room=True,
        members=["Ann", "Ben"],
    )
    await collect(llm.stream(request))
    messages = fake_openai.requests[0].body["messages"]
    assert messages[0]["role"] == "system"
    assert "shared chat room (#kitchen)" in messages[0]["content"]
    assert messages[1:] == [
        {
            "role": "user",
            "content": "(People in this room: Ann, Ben.)\n\n[Ann]: pizza?\n\n[Ben]: yes!\n\n"
            "[Ann]: @assistant which topping?",
        }
    ]


async def test_temperature_is_sent_when_set(fake_openai: FakeOpenAI) -> None:
    llm = make_llm(fake_openai, temperature=0.5)
    await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert fake_openai.requests[0].body["temperature"] == 0.5


async def test_length_ends_with_stop_reason_max_tokens(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    fake_openai.script(Reply(pieces=["trunc"], stop_reason="length"))
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.text == "trunc"
    assert outcome.finish is not None and outcome.finish.stop_reason == "max_tokens"


async def test_aclose_closes_the_upstream_response(fake_openai: FakeOpenAI, llm: OpenAILLM) -> None:
    fake_openai.script(Reply(pieces=["a", "b"], stall=True, ping_every=0.05))
    stream = llm.stream(dm("go"))
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == "a"
    await stream.aclose()
    await fake_openai.wait_disconnect(1)
    assert fake_openai.disconnects == 1


async def test_retries_then_llm_unavailable(fake_openai: FakeOpenAI, llm: OpenAILLM) -> None:
    fake_openai.default = Reply.status_error(
        429, "rate_limit_exceeded", "slow down", retry_after="0.01"
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_openai.attempts == 1 + 2
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.retry_after == pytest.approx(0.01)


async def test_server_errors_are_retried_and_can_recover(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    fake_openai.script(Reply.status_error(503, retry_after="0"), Reply(pieces=["ok"]))
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.text == "ok"
    assert fake_openai.attempts == 2


async def test_insufficient_quota_fails_at_once(
    fake_openai: FakeOpenAI, llm: OpenAILLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.default = Reply.status_error(
        429, "insufficient_quota", "quota", retry_after="0", code="insufficient_quota"
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_openai.attempts == 1
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert "spend limit" in outcome.error.message
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_a_long_retry_after_fails_at_once(fake_openai: FakeOpenAI, llm: OpenAILLM) -> None:
    fake_openai.default = Reply.status_error(429, "rate_limit_exceeded", retry_after="90")
    outcome = await collect(llm.stream(dm("hi")))
    assert fake_openai.attempts == 1
    assert outcome.error is not None and outcome.error.retry_after == 90


async def test_error_mid_stream_raises_llm_error_after_the_pieces(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    fake_openai.script(
        Reply(pieces=["half ", "way"], error={"message": "model crashed", "type": "server_error"})
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.pieces == ["half ", "way"]
    assert outcome.finish is None
    assert outcome.error is not None
    assert outcome.error.code == "llm_error"


async def test_invalid_key_is_a_clear_error_and_later_requests_work(
    fake_openai: FakeOpenAI, llm: OpenAILLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.script(
        Reply.status_error(401, "invalid_request_error", "Incorrect API key provided"),
        Reply(pieces=["back"]),
    )
    outcome = await collect(llm.stream(dm("hi")))
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    assert outcome.error.message.startswith(
        "The assistant is not available: the server's API key was refused"
    )
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    again = await collect(llm.stream(dm("hi")))
    assert again.text == "back"


async def test_stalled_stream_ends_after_the_read_timeout(fake_openai: FakeOpenAI) -> None:
    llm = make_llm(fake_openai, read_timeout=0.3)
    fake_openai.script(Reply(pieces=["partial"], stall=True))
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.pieces == ["partial"]
    assert outcome.error is not None
    assert outcome.error.code == "llm_unavailable"
    await fake_openai.wait_disconnect(1)


async def test_settings_choose_this_provider(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake_openai.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUB_OPENAI_MODEL", "llama-from-settings")
    settings = load_settings(llm_max_retries=0)
    llm = create_llm(settings)
    assert isinstance(llm, OpenAILLM)
    outcome = await collect(llm.stream(dm("hi")))
    await llm.aclose()
    assert outcome.error is None
    seen = fake_openai.requests[0]
    assert seen.body["model"] == "llama-from-settings"
    assert seen.headers["authorization"] == "Bearer no-key"


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(RuntimeError) as caught:
        OpenAILLM(model="m", base_url="http://127.0.0.1:9/v1", system_prompt="", max_tokens=8)
    assert str(caught.value) == MISSING_EXTRA
    assert "pip install" in MISSING_EXTRA


async def test_a_partial_reply_is_continued_after_a_user_turn_asking_for_it(
    fake_openai: FakeOpenAI, llm: OpenAILLM
) -> None:
    fake_openai.script(Reply(pieces=[" world", "!"], stop_reason="stop"))
    base = dm("Say hello to the world")
    request = LLMRequest(channel=base.channel, turns=base.turns, partial="Hello, ")
    outcome = await collect(llm.stream(request))
    assert "Hello, " + outcome.text == "Hello, world!"
    messages = fake_openai.requests[0].body["messages"]
    assert [(m["role"], m["content"]) for m in messages[-2:]] == [
        ("assistant", "Hello,"),
        ("user", CONTINUE_PROMPT),
    ]
