"""A loopback server that speaks the OpenAI ``/v1/chat/completions`` streaming API.

Scripted like :class:`tests.support.fake_anthropic.FakeAnthropic` (same :class:`Reply`):
``stop_reason`` is the ``finish_reason`` (``stop``, ``length``), ``error`` with status 200
is an error chunk after the pieces. Give the SDK ``base_url=fake.base_url``, or a whole hub
``fake.env()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.support.fake_anthropic import LoopbackServer, Received, Reply, sse

__all__ = ["FakeOpenAI", "Received", "Reply", "fake_openai"]


class FakeOpenAI(LoopbackServer):
    """``POST /v1/chat/completions`` with ``stream: true``: chunks, usage, ``[DONE]``."""

    routes = ("/v1/chat/completions",)

    def __init__(self) -> None:
        super().__init__()
        self.default = Reply(stop_reason="stop")

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url``."""
        return f"{self.url}/v1"

    def env(self) -> dict[str, str]:
        """Environment for a hub (in-process or a worker process) answering through this fake."""
        return {
            "HUB_LLM": "openai",
            "HUB_OPENAI_BASE_URL": self.base_url,
            "HUB_OPENAI_MODEL": "fake-model",
        }

    def error_response(self, reply: Reply) -> web.Response:
        """OpenAI's error body: ``{"error": {"message", "type", "code"}}``."""
        error = dict(reply.error or {"type": "server_error", "message": "error"})
        details = error.pop("details", None)
        if isinstance(details, dict) and "error_code" in details:
            error["code"] = details["error_code"]
        error.setdefault("code", None)
        return web.json_response({"error": error}, status=reply.status, headers=reply.headers)

    async def write_stream(
        self, response: web.StreamResponse, reply: Reply, body: dict[str, Any]
    ) -> None:
        model = body.get("model", "fake-model")

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(sse(None, chunk))

        async def keepalive() -> None:
            await response.write(b": keep-alive\n\n")

        await send({"role": "assistant", "content": ""})
        for piece in reply.pieces:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await send({"content": piece})
        if reply.error is not None:
            await response.write(sse(None, {"error": reply.error}))
            return
        if reply.stall:
            await self.hold(keepalive, reply.ping_every)
            return
        await send({}, reply.stop_reason)
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = reply.usage.get("input_tokens", 0)
            cached = reply.usage.get("cache_read_input_tokens", 0)
            completion = max(1, len(reply.pieces))
            usage = {
                "prompt_tokens": prompt + cached,
                "completion_tokens": completion,
                "total_tokens": prompt + cached + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(sse(None, chunk))
        await response.write(sse(None, "[DONE]"))


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A running :class:`FakeOpenAI` for one test."""
    async with FakeOpenAI() as fake:
        yield fake
