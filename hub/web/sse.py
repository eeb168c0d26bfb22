"""``GET /api/events``: the /ws frames as Server-Sent Events, for clients that cannot upgrade.

Every event is named after its frame and carries an id (see ``event_ids``), so a browser's
``EventSource`` resumes with ``Last-Event-ID`` and shows nothing twice and misses nothing.
"""

from __future__ import annotations

import contextlib
import json

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from hub.broker.base import BrokerError
from hub.core.connection import Connection
from hub.errors import UNAVAILABLE, CloseCode, HubError, refusal_close_code
from hub.web.event_ids import StreamPosition
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.origin import origin_allowed
from hub.web.peer import client_ip
from hub.web.tickets import stream_user

PING_SECONDS = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
RETRY_MS = 1000
"""How long a browser waits before reconnecting (sent once, in the first event)."""


def last_event_id(request: web.Request) -> str:
    """The header a reconnecting EventSource sends, or ``?last_event_id=`` for a new one."""
    return request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")


async def event_stream(request: web.Request) -> EventSourceResponse:
    """Start an event stream that proxies must not buffer."""
    response = EventSourceResponse(ping_interval=PING_SECONDS, allow_all_methods=True, sep="\n")
    await response.prepare(request)
    return response


async def finish(response: EventSourceResponse) -> None:
    """Stop pinging and end the stream (the client may already be gone)."""
    response.stop_streaming()
    with contextlib.suppress(Exception):
        await response.wait()


class SseSink:
    """Writes the frames the client lacks as named events, each with its stream position."""

    def __init__(self, response: EventSourceResponse, position: StreamPosition) -> None:
        self.response = response
        self.position = position
        self._retry: int | None = RETRY_MS

    async def send(self, payload: str) -> None:
        frame = json.loads(payload)
        if not self.position.admit(frame):
            return
        retry, self._retry = self._retry, None
        await self.response.send(
            payload, id=self.position.encode(), event=str(frame.get("type")), retry=retry
        )

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            body = json.dumps({"code": code, "reason": reason})
            await self.response.send(body, id=self.position.encode(), event="close")
        self.response.stop_streaming()


async def events(request: web.Request) -> web.StreamResponse:
    """The user's frames as events until the client goes; ``Last-Event-ID`` resumes."""
    settings, hub = request.app[SETTINGS], request.app[HUB]
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(text="This page's origin may not connect.")
    user = await stream_user(request)
    position = StreamPosition.decode(last_event_id(request))
    resume = dict(position.cursor) or None
    response = await event_stream(request)
    conn = Connection(
        user,
        SseSink(response, position),
        settings.outbound_queue,
        max_bytes=settings.outbound_bytes,
        transport="sse",
        peer=client_ip(request),
    )
    conn.start()
    metrics = request.app[METRICS]
    metrics.connections.labels("sse").inc()
    try:
        await hub.open_session(conn, resume)
        await response.wait()
    except BrokerError:
        hub.send_error(conn, "unavailable", UNAVAILABLE, None, 1.0)
        conn.close(CloseCode.TRY_AGAIN, "message store unreachable; reconnect later")
    except HubError as exc:  # over a connection limit, or the token was revoked
        hub.send_error(conn, exc.code, exc.message, None, exc.retry_after)
        conn.close(refusal_close_code(exc), exc.message)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        metrics.connections.labels("sse").dec()
        conn.close(CloseCode.NORMAL, "")
        with contextlib.suppress(BrokerError):
            await hub.close_session(conn)
        await conn.wait_closed(2.0)
        await finish(response)
    return response
