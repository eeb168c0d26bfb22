"""``POST /api/ticket`` and the identity of an event stream: a ticket in the URL or a Bearer token."""

from __future__ import annotations

from aiohttp import web

from hub.core.tickets import TICKET_TTL
from hub.errors import FrameError
from hub.protocol import User
from hub.web.auth import request_user
from hub.web.keys import HUB


async def ticket(request: web.Request) -> web.Response:
    """Trade a token (Bearer) for a single-use ticket an ``EventSource`` can put in its URL."""
    user = request_user(request)
    issued = await request.app[HUB].issue_ticket(user)
    return web.json_response({"ticket": issued, "expires_in": int(TICKET_TTL)})


async def stream_user(request: web.Request) -> User:
    """The user of an event stream: ``?ticket=`` (used up now) or ``Authorization: Bearer``."""
    given = request.query.get("ticket")
    if given is None:
        return request_user(request)
    user = await request.app[HUB].redeem_ticket(given)
    if user is None:
        raise FrameError(
            "unauthorized",
            "That ticket is used up or expired; get a new one with POST /api/ticket.",
        )
    return user
