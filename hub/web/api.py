"""HTTP routes: health, guest login, history, chat, publish, metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from hub.auth import guest_user_id, mint_token
from hub.errors import FrameError
from hub.names import clean_name
from hub.protocol import (
    Author,
    ChannelName,
    Done,
    Error,
    HistoryRequest,
    Ref,
    User,
    describe_validation,
    dm_channel,
)
from hub.web.auth import request_user, require_api_key
from hub.web.htmx import chat_html, is_htmx
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.peer import client_ip
from hub.web.sse import event_stream, finish

CHAT_TIMEOUT = 300.0
"""Longest a non-streaming /api/chat waits for the reply before answering 503."""


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
        raise FrameError("bad_frame", "Send a JSON object as the request body.") from None
    except RecursionError:
        raise FrameError("bad_frame", "The request body nests too deeply.") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FrameError("invalid", describe_validation(exc)) from None


async def health(request: web.Request) -> web.Response:
    """200 while the broker answers, else 503, so a proxy or orchestrator can route around."""
    hub = request.app[HUB]
    ok, body = await hub.health()
    return web.json_response(body, status=200 if ok else 503)


async def login(request: web.Request) -> web.Response:
    """Mint a guest token; 404 where the operator turned guest login off."""
    settings = request.app[SETTINGS]
    if not settings.guest_login:
        raise FrameError("not_found", "Guest login is off on this hub; ask for a token.")
    body = await _body(request, LoginBody)
    await request.app[HUB].guest_login(client_ip(request))
    try:
        name = clean_name(body.name)
    except ValueError as exc:
        raise FrameError("invalid", str(exc)) from None
    user = User(id=guest_user_id(), name=name, guest=True)
    token = mint_token(settings.secret_value(), user.id, user.name, settings.token_ttl, guest=True)
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
        raise FrameError("invalid", describe_validation(exc)) from None
    messages, more = await request.app[HUB].messages.history(
        user, page.channel, page.before, page.limit
    )
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
    if is_htmx(request):
        return await chat_html(request, user)
    body = await _body(request, ChatBody)
    hub = request.app[HUB]
    channel = body.channel or dm_channel(user.id)
    queue: asyncio.Queue[str | Done | Error] = asyncio.Queue()
    result, reply = await hub.messages.post(
        user, channel, body.text, body.ref, ask=True, listener=queue.put_nowait
    )
    if reply is None:
        return web.json_response({"id": result.id, "duplicate": True})
    if not body.stream:
        return await _chat_json(queue, result.id)
    response = await event_stream(request)
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
            await response.send(json.dumps(event))
    except TimeoutError:
        timeout = {"code": "llm_unavailable", "message": "The reply took too long."}
        await response.send(json.dumps({"error": timeout}))
    await response.send("[DONE]")
    await finish(response)
    return response


async def _chat_json(queue: asyncio.Queue[str | Done | Error], message_id: str) -> web.Response:
    error: Error | None = None
    try:
        async for item in _reply_items(queue):
            if isinstance(item, Error):
                error = item
            elif isinstance(item, Done):
                if error is not None and not item.text:
                    raise FrameError(error.code, error.message, retry_after=error.retry_after)
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
        raise FrameError("llm_unavailable", "The reply took too long.") from None
    raise FrameError("internal", "The reply ended without a result.")


async def publish(request: web.Request) -> web.Response:
    """A backend pushes a message into a user's dm or a room (proactive message, hand-off)."""
    require_api_key(request)
    body = await _body(request, PublishBody)
    author = Author.model_validate((body.author or PublishAuthor()).model_dump())
    message_id = await request.app[HUB].messages.publish(body.channel, author, body.text)
    return web.json_response({"id": message_id, "channel": body.channel})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; with HUB_METRICS_KEY set, only for a scraper that sends it."""
    key = request.app[SETTINGS].metrics_key
    if key is not None and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(),
        f"Bearer {key.get_secret_value()}".encode(),
    ):
        raise FrameError("unauthorized", "Send 'Authorization: Bearer <HUB_METRICS_KEY>'.")
    return web.Response(
        body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )
