"""HTTP routes: health, guest login, history, chat, publish, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from hub.auth import guest_user_id, mint_token
from hub.protocol import (
    Author,
    ChannelName,
    Done,
    Error,
    HistoryRequest,
    Message,
    Ref,
    User,
    describe_validation,
    dm_channel,
    entry_body,
    now_ms,
)
from hub.render import render_markdown
from hub.web.auth import request_user, require_api_key
from hub.web.errors import STATUS, json_error
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.sse import sse_response, sse_write

CHAT_TIMEOUT = 300.0
"""Longest a non-streaming /api/chat waits for the reply before answering 504."""


class LoginBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class ChatBody(BaseModel):
    text: str = Field(min_length=1)
    channel: ChannelName | None = None
    stream: bool = False
    ref: Ref | None = None


class PublishAuthor(BaseModel):
    id: str = Field("system", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = Field("Hub", min_length=1, max_length=64)
    role: str = Field("system", pattern=r"^(user|assistant|system)$")


class PublishBody(BaseModel):
    channel: ChannelName
    text: str = Field(min_length=1)
    author: PublishAuthor | None = None


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise json_error(400, "bad_frame", "Send a JSON object as the request body.") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise json_error(400, "invalid", describe_validation(exc)) from None


async def health(request: web.Request) -> web.Response:
    """200 while the broker answers, else 503, so a proxy or orchestrator can route around."""
    hub = request.app[HUB]
    ok = await hub.broker.ping()
    body = {
        "status": "ok" if ok and not hub.draining else ("draining" if hub.draining else "down"),
        "worker": hub.worker,
        "broker": "ok" if ok else "unreachable",
        "llm": hub.llm.name,
        "connections": len(hub.registry.all()),
    }
    return web.json_response(body, status=200 if ok and not hub.draining else 503)


async def login(request: web.Request) -> web.Response:
    """Mint a guest token; 404 where the operator turned guest login off."""
    settings = request.app[SETTINGS]
    if not settings.guest_login:
        raise json_error(404, "not_found", "Guest login is off on this hub; ask for a token.")
    body = await _body(request, LoginBody)
    name = " ".join(body.name.split())
    if not name:
        raise json_error(400, "invalid", "Enter a name with at least one visible character.")
    user = User(id=guest_user_id(), name=name)
    token = mint_token(settings.secret_value(), user.id, user.name, settings.token_ttl)
    return web.json_response({"token": token, "user": user.model_dump()})


async def history(request: web.Request) -> web.Response:
    """A page of a channel's history for the token's user."""
    user = request_user(request)
    query = request.query
    fields = {"type": "history", "channel": query.get("channel") or dm_channel(user.id)}
    fields.update({k: query[k] for k in ("before", "limit") if query.get(k)})
    try:
        page = HistoryRequest.model_validate(fields)
    except ValidationError as exc:
        raise json_error(400, "invalid", describe_validation(exc)) from None
    messages, more = await request.app[HUB].history(user, page.channel, page.before, page.limit)
    return web.json_response({"channel": page.channel, "messages": messages, "more": more})


async def _reply_items(
    queue: asyncio.Queue[str | Done | Error],
) -> AsyncIterator[str | Done | Error]:
    """What the reply's listener saw, up to its Done; TimeoutError past ``CHAT_TIMEOUT``."""
    deadline = time.monotonic() + CHAT_TIMEOUT
    while True:
        item = await asyncio.wait_for(queue.get(), max(deadline - time.monotonic(), 0.01))
        yield item
        if isinstance(item, Done):
            return


async def chat(request: web.Request) -> web.StreamResponse:
    """Post like ``send`` and ask the assistant; the reply as JSON or as Server-Sent Events."""
    user = request_user(request)
    body = await _body(request, ChatBody)
    hub = request.app[HUB]
    channel = body.channel or dm_channel(user.id)
    queue: asyncio.Queue[str | Done | Error] = asyncio.Queue()
    result, reply = await hub.post(
        user, channel, body.text, body.ref, ask=True, listener=queue.put_nowait
    )
    if reply is None:
        return web.json_response({"id": result.id, "duplicate": True})
    if not body.stream:
        return await _chat_json(queue, result.id)
    response = await sse_response(request)
    try:
        async for item in _reply_items(queue):
            if isinstance(item, str):
                event: dict[str, Any] = {"content": item}
            elif isinstance(item, Error):
                event = {"error": item.model_dump(exclude_none=True)}
            else:
                event = {
                    "done": {
                        "id": item.id,
                        "stop_reason": item.stop_reason,
                        "message_id": result.id,
                    }
                }
            await sse_write(response, json.dumps(event))
    except TimeoutError:
        timeout = {"code": "llm_unavailable", "message": "The reply took too long."}
        await sse_write(response, json.dumps({"error": timeout}))
    await sse_write(response, "[DONE]")
    return response


async def _chat_json(queue: asyncio.Queue[str | Done | Error], message_id: str) -> web.Response:
    error: Error | None = None
    try:
        async for item in _reply_items(queue):
            if isinstance(item, Error):
                error = item
            elif isinstance(item, Done):
                if error is not None and not item.text:
                    raise json_error(
                        STATUS[error.code], error.code, error.message, error.retry_after
                    )
                return web.json_response(
                    {
                        "id": item.id,
                        "text": item.text,
                        "html": item.html,
                        "stop_reason": item.stop_reason,
                        "message_id": message_id,
                        "usage": item.usage.model_dump() if item.usage else None,
                    }
                )
    except TimeoutError:
        raise json_error(504, "llm_unavailable", "The reply took too long.") from None
    raise json_error(500, "internal", "The reply ended without a result.")


async def publish(request: web.Request) -> web.Response:
    """A backend pushes a message into a user's dm or a room (proactive message, hand-off)."""
    require_api_key(request)
    body = await _body(request, PublishBody)
    hub = request.app[HUB]
    if len(body.text) > hub.settings.max_text:
        raise json_error(
            413, "too_long", f"text may be at most {hub.settings.max_text} characters."
        )
    given = body.author or PublishAuthor()
    author = Author.model_validate(given.model_dump())
    message = Message(channel=body.channel, id="0-0", author=author, text=body.text, ts=now_ms())
    if author.role == "assistant":
        message = message.model_copy(update={"html": render_markdown(body.text)})
    result = await hub.broker.append(body.channel, entry_body(message))
    assert result is not None
    return web.json_response({"id": result.id, "channel": body.channel})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    return web.Response(
        body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )
