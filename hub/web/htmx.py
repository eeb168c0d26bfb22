"""htmx's streaming chat bubble, with no JavaScript of the page's own.

A form-encoded ``POST /api/chat`` with ``HX-Request`` answers at once with two bubbles: the
user's, and the assistant's, which ``htmx-ext-sse`` connects to ``GET /api/replies/<reply>/events``.
That stream sends ``event: delta`` (the next piece, escaped, in a ``<span>``) and ends with
``event: done`` (the whole bubble, the reply's markdown rendered to safe HTML).
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from hub.core.connection import Connection
from hub.errors import CloseCode, FrameError
from hub.protocol import CHANNEL_RE, User, dm_channel
from hub.web.keys import HUB, SETTINGS
from hub.web.origin import origin_allowed, own_origin
from hub.web.sse import event_stream, finish, last_event_id
from hub.web.tickets import stream_user

REPLY_RE = re.compile(r"^r[0-9a-f]{1,32}$")


def is_htmx(request: web.Request) -> bool:
    """htmx marks its requests; a form post with this header wants HTML back."""
    return request.headers.get("HX-Request") == "true"


def _bubble(role: str, name: str, body_html: str, extra: str = "") -> str:
    return (
        f'<div class="bubble {role}"{extra}><div class="who">{html.escape(name)}</div>'
        f'<div class="text">{body_html}</div></div>'
    )


async def chat_html(request: web.Request, user: User) -> web.Response:
    """Post the form's text and answer both bubbles at once; the reply streams into the second."""
    form = await request.post()
    text, channel = str(form.get("text", "")), str(form.get("channel") or dm_channel(user.id))
    if not CHANNEL_RE.fullmatch(channel):
        raise FrameError("invalid", "channel must be dm:<your id> or room:<name>.")
    if not text.strip():
        raise FrameError("invalid", "Type a message first.")
    hub = request.app[HUB]
    _result, reply = await hub.messages.post(user, channel, text, None, ask=True)
    assert reply is not None  # no ref, so never a duplicate
    ticket = await hub.issue_ticket(user)
    query = urlencode({"channel": channel, "ticket": ticket})
    url = f"{own_origin(request)}/api/replies/{reply}/events?{query}"
    wired = (
        f' id="reply-{reply}" hx-ext="sse" sse-connect="{html.escape(url)}" sse-close="done"'
        f' aria-busy="true"'
    )
    pending = (
        f'<div class="bubble assistant"{wired}><div class="who">Assistant</div>'
        f'<div class="text" sse-swap="delta" hx-swap="beforeend"></div>'
        f'<div hidden sse-swap="done" hx-target="#reply-{reply}" hx-swap="outerHTML"></div>'
        "</div>"
    )
    mine = _bubble("user", user.name, html.escape(text))
    return web.Response(text=mine + pending, content_type="text/html")


class ReplySink:
    """One reply of a channel's frames as htmx events: escaped deltas, then the whole bubble."""

    def __init__(self, response: EventSourceResponse, reply: str, after: int) -> None:
        self.response = response
        self.reply = reply
        self.next_seq = after + 1
        self.ended = False

    async def send(self, payload: str) -> None:
        frame: dict[str, Any] = json.loads(payload)
        if self.ended or frame.get("reply") != self.reply:
            return
        ftype = frame.get("type")
        if ftype == "delta" and int(frame["seq"]) >= self.next_seq:
            self.next_seq = int(frame["seq"]) + 1
            piece = f"<span>{html.escape(str(frame['text']))}</span>"
            await self.response.send(piece, id=str(frame["seq"]), event="delta")
        elif ftype in ("done", "message") and "html" in frame:
            self.ended = True
            name = str((frame.get("author") or {}).get("name", "Assistant"))
            bubble = _bubble("assistant", name, str(frame["html"]), f' id="m-{frame["id"]}"')
            await self.response.send(bubble, id=str(frame["id"]), event="done")
            self.response.stop_streaming()

    async def close(self, code: int, reason: str) -> None:
        if not self.ended:
            self.response.stop_streaming()


async def reply_events(request: web.Request) -> web.StreamResponse:
    """``GET /api/replies/<reply>/events?channel=…``: one reply as htmx-ready HTML events."""
    settings, hub = request.app[SETTINGS], request.app[HUB]
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(text="This page's origin may not connect.")
    reply, channel = request.match_info["reply"], request.query.get("channel", "")
    if not REPLY_RE.fullmatch(reply) or not CHANNEL_RE.fullmatch(channel):
        raise FrameError("invalid", "Give a reply id (r…) and its ?channel=.")
    user = await stream_user(request)
    await hub.messages.check_access(user, channel, None)
    seen = last_event_id(request)
    response = await event_stream(request)
    sink = ReplySink(response, reply, int(seen) if seen.isdigit() and len(seen) < 10 else -1)
    conn = Connection(user, sink, settings.outbound_queue, transport="sse")
    conn.start()
    try:
        await hub.watch_reply(conn, channel, reply)
        await response.wait()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        conn.close(CloseCode.NORMAL, "")
        await hub.unwatch(conn)
        await conn.wait_closed(2.0)
        await finish(response)
    return response
