"""Server-Sent Events: ``GET /api/events`` carries the /ws frames for clients that cannot upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from hub.broker.base import BrokerError
from hub.core.connection import Connection
from hub.errors import CloseCode
from hub.protocol import CHANNEL_RE, STREAM_ID_RE, stored_id
from hub.web.auth import request_user
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.origin import origin_allowed

KEEPALIVE_SECONDS = 15.0


async def sse_response(request: web.Request) -> web.StreamResponse:
    """Start an event stream that proxies must not buffer."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def sse_write(response: web.StreamResponse, data: str, event_id: str | None = None) -> None:
    """Write one event; ``data`` must be a single line (JSON is)."""
    head = f"id: {event_id}\n" if event_id else ""
    await response.write(f"{head}data: {data}\n\n".encode())


def encode_cursor(cursor: dict[str, str]) -> str:
    """Last ids per channel as one Last-Event-ID: ``dm:a=1-0,room:x=5-2``."""
    return ",".join(f"{channel}={last}" for channel, last in sorted(cursor.items()))


def decode_cursor(value: str) -> dict[str, str]:
    """Read a Last-Event-ID back, ignoring parts that are not channel=id."""
    cursor: dict[str, str] = {}
    for part in value.split(",")[:200]:
        channel, _, last = part.strip().partition("=")
        if CHANNEL_RE.match(channel) and STREAM_ID_RE.match(last):
            cursor[channel] = last
    return cursor


class SseSink:
    """Writes frames as events, stamping message ids so the browser's Last-Event-ID resumes."""

    def __init__(self, response: web.StreamResponse, cursor: dict[str, str]) -> None:
        self.response = response
        self.cursor = dict(cursor)
        self.closed = asyncio.Event()

    async def send(self, payload: str) -> None:
        event_id = None
        message_id = stored_id(payload)
        if message_id is not None:
            self.cursor[json.loads(payload)["channel"]] = message_id
            event_id = encode_cursor(self.cursor)
        await sse_write(self.response, payload, event_id)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.response.write(
                f"event: close\ndata: {json.dumps({'code': code, 'reason': reason})}\n\n".encode()
            )
        self.closed.set()


async def events(request: web.Request) -> web.StreamResponse:
    """The user's frames as events until the client goes; ``Last-Event-ID`` resumes."""
    settings, hub = request.app[SETTINGS], request.app[HUB]
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(text="This page's origin may not connect.")
    user = request_user(request)
    cursor = decode_cursor(request.headers.get("Last-Event-ID", ""))
    response = await sse_response(request)
    sink = SseSink(response, cursor)
    conn = Connection(user, sink, settings.outbound_queue, transport="sse")
    conn.start()
    metrics = request.app[METRICS]
    metrics.connections.labels("sse").inc()
    try:
        await hub.open_session(conn, cursor or None)
        while not sink.closed.is_set() and not conn.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sink.closed.wait(), KEEPALIVE_SECONDS)
            if not sink.closed.is_set():
                await response.write(b": keepalive\n\n")
    except (ConnectionError, RuntimeError):
        pass
    finally:
        metrics.connections.labels("sse").dec()
        conn.close(CloseCode.NORMAL, "")
        with contextlib.suppress(BrokerError):
            await hub.close_session(conn)
        await conn.wait_closed(2.0)
    return response
