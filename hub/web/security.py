"""Browser hardening on every answer, and the HTTP server's own time limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web_response
from aiohttp import web
from aiohttp.typedefs import Handler

from hub.errors import FrameError
from hub.settings import Settings
from hub.web.keys import SETTINGS

SERVER_NAME = "hub"
"""The ``Server`` header: no product versions for a scanner to match against."""

# aiohttp stamps its own answers (400s of its parser included) with this module global.
aiohttp.web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


def frame_ancestors(settings: Settings) -> str:
    """Who may show the hub in a frame: itself and the origins allowed to embed it."""
    if "*" in settings.allowed_origins:
        return "*"
    return " ".join(["'self'", *settings.allowed_origins])


def security_headers(settings: Settings) -> dict[str, str]:
    """Headers every answer carries; the CSP lets the web client run and load nothing foreign."""
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        f"form-action 'self'; frame-ancestors {frame_ancestors(settings)}"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Server": SERVER_NAME,
    }
    if not settings.allowed_origins:
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return headers


def security_headers_hook(
    settings: Settings,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """on_response_prepare: stamp every answer, errors and streams included (one set of
    strings shared by all answers: a WebSocket keeps its handshake's headers while open)."""
    headers = security_headers(settings)

    async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)

    return add_security_headers


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read a request's body within HUB_BODY_TIMEOUT, so a trickled body cannot hold a worker."""
    if request.body_exists:
        timeout = request.app[SETTINGS].body_timeout
        try:
            await asyncio.wait_for(request.read(), timeout)
        except TimeoutError:
            raise FrameError(
                "bad_frame", f"The request body did not arrive within {timeout:g} s."
            ) from None
    return await handler(request)


def runner_options(settings: Settings) -> dict[str, Any]:
    """AppRunner options: a connection must send its request headers within HUB_HEADER_TIMEOUT.

    aiohttp's keep-alive timer runs from the moment a connection opens until a whole request
    head has arrived, so it also bounds slowly trickled headers (slowloris), not only idling.
    """
    return {"keepalive_timeout": settings.header_timeout}
