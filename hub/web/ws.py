"""``GET /ws``: the WebSocket endpoint — hello, then frames through the hub's dispatch table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from aiohttp import WSMsgType, web

from hub.auth import AuthError, verify_token
from hub.broker.base import BrokerError
from hub.core.connection import Connection, write_eagerly
from hub.core.hub import Hub
from hub.errors import UNAVAILABLE, CloseCode, FrameError, HubError, refusal_close_code
from hub.protocol import (
    Error,
    Hello,
    User,
    encode,
    parse_client_frame,
)
from hub.settings import Settings
from hub.web.auth import request_user
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.origin import origin_allowed
from hub.web.peer import client_ip

log = logging.getLogger(__name__)

BAD_FRAMES_BEFORE_CLOSE = 20
"""Consecutive bad frames after which a client is closed with 4029."""
FRAMES_PER_SECOND = 50.0
FRAME_BURST = 200
"""Any client frame costs one token of a per-connection bucket; an empty bucket closes 4029."""


CLOSE_HANDSHAKE_SECONDS = 5.0
"""How long a close waits for the peer's answer before the TCP connection is dropped."""


class WsSink:
    """Writes frames to an aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self.ws = ws
        self._transport = transport

    async def send(self, payload: str) -> None:
        await self.ws.send_str(payload)

    def write_now(self, payload: str) -> Awaitable[None] | None:
        """aiohttp writes to the transport before it waits: only backpressure leaves a rest."""
        return write_eagerly(self.ws.send_str(payload))

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``; a peer that neither reads nor answers is cut off, so that its
        handler (and what it holds) ends instead of waiting for the peer for ever."""
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_HANDSHAKE_SECONDS
            )
        except TimeoutError:
            if isinstance(self._transport, asyncio.WriteTransport):
                self._transport.abort()


async def _say(ws: web.WebSocketResponse, error: Error) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(encode(error))


Greeting = tuple[User, dict[str, str] | None, str | None]
"""Who said hello, where they resume and the hello's ref (not the hello: it holds the token)."""


async def _hello(ws: web.WebSocketResponse, settings: Settings) -> Greeting | None:
    """Wait for a valid hello within the deadline; bad frames get their error meanwhile."""
    deadline = time.monotonic() + settings.hello_timeout
    for _ in range(BAD_FRAMES_BEFORE_CLOSE):
        remaining = deadline - time.monotonic()
        try:
            msg = await ws.receive(timeout=max(remaining, 0.001))
        except TimeoutError:
            await _refuse(ws, f"No hello within {settings.hello_timeout:g} s; send hello first.")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type is not WSMsgType.TEXT:
            await _say(ws, Error(code="bad_frame", message="Send text frames of JSON, not binary."))
            continue
        try:
            frame = parse_client_frame(msg.data)
        except FrameError as exc:
            await _say(ws, Error(code=exc.code, message=exc.message, ref=exc.ref))
            continue
        if not isinstance(frame, Hello):
            await _refuse(ws, "The first frame must be hello with a token.", frame.ref)
            return None
        try:
            user = verify_token(settings.secret_value(), frame.token, settings.token_max_ttl)
            return user, frame.resume, frame.ref
        except AuthError as exc:
            await _refuse(ws, str(exc), frame.ref)
            return None
    await ws.close(code=CloseCode.ABUSE, message=b"too many bad frames")
    return None


async def _refuse(ws: web.WebSocketResponse, message: str, ref: str | None = None) -> None:
    await _say(ws, Error(code="unauthorized", message=message, ref=ref))
    await ws.close(code=CloseCode.UNAUTHORIZED, message=b"unauthorized")


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade, authenticate, open a session and read frames until the peer goes."""
    settings, hub = request.app[SETTINGS], request.app[HUB]
    if hub.draining:
        raise web.HTTPServiceUnavailable(text="This worker is restarting; connect again.")
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(
            text="This page's origin may not connect; the operator can add it to "
            "HUB_ALLOWED_ORIGINS."
        )
    header_user = request_user(request) if "Authorization" in request.headers else None
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat, max_msg_size=settings.max_frame)
    await ws.prepare(request)
    resume: dict[str, str] | None = None
    ref: str | None = None
    if header_user is None:
        greeted = await _hello(ws, settings)
        if greeted is None:
            return ws
        user, resume, ref = greeted
    else:
        user = header_user
    metrics = request.app[METRICS]
    conn = Connection(
        user,
        WsSink(ws, request.transport),
        settings.outbound_queue,
        max_bytes=settings.outbound_bytes,
        peer=client_ip(request),
    )
    conn.start()
    metrics.connections.labels("ws").inc()
    try:
        try:
            await hub.open_session(conn, resume)
        except BrokerError as exc:
            # No welcome can follow on this connection: close it, so the client reconnects
            # (with backoff) instead of waiting for ever on a session that never opened.
            log.warning("session of %s not opened: %s", user.id, exc)
            hub.send_error(conn, "unavailable", UNAVAILABLE, ref, 1.0)
            conn.close(CloseCode.TRY_AGAIN, "message store unreachable; reconnect later")
            return ws
        except HubError as exc:  # over a connection limit, or the token was revoked
            hub.send_error(conn, exc.code, exc.message, ref, exc.retry_after)
            conn.close(refusal_close_code(exc), exc.message)
            return ws
        await _read_until_closed(ws, conn, hub, settings, late_hello=header_user is not None)
    finally:
        metrics.connections.labels("ws").dec()
        if conn.close_code == CloseCode.TOO_SLOW:
            metrics.slow_closes.inc()
        conn.close(CloseCode.NORMAL, "")
        with contextlib.suppress(BrokerError):
            await hub.close_session(conn)
        await conn.wait_closed(5.0)
    return ws


async def _read_until_closed(
    ws: web.WebSocketResponse, conn: Connection, hub: Hub, settings: Settings, *, late_hello: bool
) -> None:
    """Read in this handler's own task (no second task per connection); the hub closing the
    connection as too slow stops the read at once, even while the peer sends nothing."""
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop_reading() -> None:
        nonlocal stopped
        # A close from inside this task needs no cancel: the read loop returns after it.
        if not stopped and asyncio.current_task() is not task:
            stopped = True
            task.cancel()

    conn.on_close = stop_reading
    try:
        await _read_loop(ws, conn, hub, settings, late_hello=late_hello)
    except asyncio.CancelledError:
        if not stopped:
            raise
        task.uncancel()
    finally:
        conn.on_close = None


async def _resume_late(hub: Hub, settings: Settings, conn: Connection, hello: Hello) -> None:
    """A hello after a header sign-in: open the session again, resuming where the client says."""
    try:
        user = verify_token(settings.secret_value(), hello.token, settings.token_max_ttl)
    except AuthError as exc:
        raise FrameError("unauthorized", str(exc), hello.ref) from None
    if user.id != conn.user.id:
        raise FrameError("forbidden", "This hello names another user than the header.", hello.ref)
    await hub.close_session(conn)
    await hub.open_session(conn, hello.resume)


async def _read_loop(
    ws: web.WebSocketResponse, conn: Connection, hub: Hub, settings: Settings, *, late_hello: bool
) -> None:
    """Frames in order, one at a time; bad input is answered, floods and garbage are closed."""
    bad = 0
    tokens, stamp = float(FRAME_BURST), time.monotonic()
    async for msg in ws:
        now = time.monotonic()
        tokens = min(float(FRAME_BURST), tokens + (now - stamp) * FRAMES_PER_SECOND)
        stamp = now
        if tokens < 1:
            conn.close(CloseCode.ABUSE, "too many frames; slow down")
            return
        tokens -= 1
        if msg.type is not WSMsgType.TEXT:
            if msg.type is WSMsgType.BINARY:
                bad += 1
                hub.send_error(conn, "bad_frame", "Send text frames of JSON, not binary.")
            continue
        try:
            frame = parse_client_frame(msg.data)
        except FrameError as exc:
            bad += 1
            hub.send_error(conn, exc.code, exc.message, exc.ref)
        else:
            bad = 0
            if late_hello and isinstance(frame, Hello):
                late_hello = False
                try:
                    await _resume_late(hub, settings, conn, frame)
                except FrameError as exc:
                    hub.send_error(conn, exc.code, exc.message, exc.ref)
            else:
                await hub.handle(conn, frame)
        if bad >= BAD_FRAMES_BEFORE_CLOSE:
            conn.close(CloseCode.ABUSE, "too many bad frames")
            return
        if conn.closed:
            return
