"""A loopback server that speaks the Anthropic Messages streaming API, scripted per test.

Point the real SDK at it (``AnthropicLLM(api_key="test-key", base_url=fake.url, ...)``, or a
whole hub through ``fake.env()``: ``HUB_LLM``, ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``)::

    async with FakeAnthropic() as fake:
        fake.script(Reply(pieces=["Hel", "lo"]), Reply.status_error(529, retry_after="0"))
        ...
        assert fake.requests[0].body["model"] == "claude-test"
        await fake.wait_disconnect()

Each request takes the next scripted :class:`Reply` (``fake.default`` once the script is
used up). Every request is recorded (path, headers, JSON body) in ``fake.requests``; a
client that goes away while its stream is open is counted in ``fake.disconnects``.
With ``fake.refuse_prefill``, a conversation that ends with an assistant turn gets the 400
the API gives models that take no prefill (and uses up no scripted reply); the API's rule
that a final assistant turn must not end in whitespace is always checked.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pytest
from aiohttp import web

HOLD_MAX = 30.0
"""Longest a stalled response stays open waiting for the client to leave (s)."""


@dataclass
class Reply:
    """What the fake answers to one request."""

    pieces: Sequence[str] = ("Hello", ", ", "world", "!")
    stop_reason: str = "end_turn"
    """``end_turn``, ``max_tokens``... (OpenAI fake: ``stop``, ``length``)."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    """With ``status`` 200: an ``error`` event after ``pieces``; otherwise the error body."""
    stall: bool = False
    """After ``pieces``, send nothing more and wait for the client to leave."""
    stall_before_headers: bool = False
    """Send not even the status line; wait for the client to leave."""
    ping_every: float | None = None
    """While stalled, send a ``ping`` event this often (s), so the stream stays alive."""
    delay: float = 0.0
    """Pause before each piece (s)."""
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 12,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
    )

    @classmethod
    def status_error(
        cls,
        status: int,
        type: str = "overloaded_error",
        message: str = "Overloaded",
        *,
        retry_after: str | None = None,
        code: str | None = None,
    ) -> Reply:
        """An HTTP error answer with the API's error body and optional ``retry-after``."""
        error: dict[str, Any] = {"type": type, "message": message}
        if code:
            error["details"] = {"error_code": code}
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(status=status, error=error, headers=headers)

    @property
    def text(self) -> str:
        """All pieces joined: what the client should assemble."""
        return "".join(self.pieces)


@dataclass
class Received:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]


class LoopbackServer:
    """An aiohttp server on 127.0.0.1 (port 0) replaying a script; base of both fakes."""

    routes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.disconnects = 0
        self.default = Reply()
        self.refuse_prefill = False
        self._script: deque[Reply] = deque()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL to give the SDK."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def attempts(self) -> int:
        """How many requests arrived."""
        return len(self.requests)

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._script.extend(replies)

    async def wait_disconnect(self, count: int = 1, within: float = 5.0) -> None:
        """Return once ``count`` clients in all left open streams; fail after ``within`` s."""

        async with asyncio.timeout(within):
            while self.disconnects < count:
                await self._changed.wait()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        for path in self.routes:
            app.router.add_post(path, self._handle)
        # handler_cancellation: a client that goes away cancels its handler, which counts it.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and end open handlers."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Received(request.path, headers, body))
        refused = self.check(body)
        if refused is not None:
            return self.error_response(refused)
        reply = self._script.popleft() if self._script else self.default
        try:
            if reply.stall_before_headers:
                await asyncio.sleep(HOLD_MAX)
                return web.Response(status=504)
            if reply.status != 200:
                return self.error_response(reply)
            response = web.StreamResponse(
                headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
            )
            await response.prepare(request)
            await self.write_stream(response, reply, body)
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            self._changed.set()
            self._changed = asyncio.Event()
            raise

    def check(self, body: dict[str, Any]) -> Reply | None:
        """A 400 for a request the real API refuses; None when it is fine (see each fake)."""
        return None

    def error_response(self, reply: Reply) -> web.Response:
        """An HTTP error with the API's JSON error body."""
        return web.json_response(
            {"type": "error", "error": reply.error or {"type": "api_error", "message": "error"}},
            status=reply.status,
            headers=reply.headers,
        )

    async def write_stream(
        self, response: web.StreamResponse, reply: Reply, body: dict[str, Any]
    ) -> None:
        """Write the streamed answer; each fake says how."""
        raise NotImplementedError

    async def hold(self, ping: Callable[[], Awaitable[None]] | None, every: float | None) -> None:
        """Stall: keep the stream open (pinging if asked) until the client leaves or HOLD_MAX."""
        if ping is None or not every:
            await asyncio.sleep(HOLD_MAX)
            return
        for _ in range(int(HOLD_MAX / every) + 1):
            await asyncio.sleep(every)
            await ping()


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class FakeAnthropic(LoopbackServer):
    """``POST /v1/messages`` with ``stream: true``: the events the real API sends."""

    routes = ("/v1/messages",)
    api_key = "test-key"

    def env(self) -> dict[str, str]:
        """Environment for a hub (in-process or a worker process) answering through this fake."""
        return {
            "HUB_LLM": "anthropic",
            "ANTHROPIC_API_KEY": self.api_key,
            "ANTHROPIC_BASE_URL": self.url,
        }

    def check(self, body: dict[str, Any]) -> Reply | None:
        messages = body.get("messages") or [{}]
        last = messages[-1]
        if last.get("role") != "assistant":
            return None
        if self.refuse_prefill:
            return Reply.status_error(
                400,
                "invalid_request_error",
                "This model does not support assistant message prefill. "
                "The conversation must end with a user message.",
            )
        content = last.get("content")
        text = (
            content
            if isinstance(content, str)
            else "".join(b.get("text", "") for b in content or [])
        )
        if text != text.rstrip():
            return Reply.status_error(
                400,
                "invalid_request_error",
                "messages: final assistant content cannot end with trailing whitespace",
            )
        return None

    async def write_stream(
        self, response: web.StreamResponse, reply: Reply, body: dict[str, Any]
    ) -> None:
        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(sse(event, {"type": event, **data}))

        usage = {"output_tokens": 1, **reply.usage}
        await send(
            "message_start",
            {
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", "claude-fake"),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                }
            },
        )
        await send(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        await send("ping", {})
        for piece in reply.pieces:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await send(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        if reply.error is not None:
            await send("error", {"error": reply.error})
            return
        if reply.stall:
            await self.hold(lambda: send("ping", {}), reply.ping_every)
            return
        await send("content_block_stop", {"index": 0})
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": max(1, len(reply.pieces))},
            },
        )
        await send("message_stop", {})


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """A running :class:`FakeAnthropic` for one test."""
    async with FakeAnthropic() as fake:
        yield fake
