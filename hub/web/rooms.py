"""``POST /api/rooms/<room>/join`` and ``/leave``: room membership for clients without a WebSocket."""

from __future__ import annotations

from aiohttp import web

from hub.errors import FrameError
from hub.protocol import ROOM_RE, room_channel
from hub.web.auth import request_user
from hub.web.keys import HUB


def _room(request: web.Request) -> str:
    room = request.match_info["room"]
    if not ROOM_RE.match(room):
        raise FrameError("invalid", "A room name is 1-64 characters of a-z 0-9 _ -.")
    return room


async def join(request: web.Request) -> web.Response:
    """Make the token's user a member (as ``join`` on /ws does); post with /api/chat after."""
    user, room = request_user(request), _room(request)
    await request.app[HUB].join_room(user, room)
    return web.json_response({"room": room, "channel": room_channel(room), "member": True})


async def leave(request: web.Request) -> web.Response:
    """End the token's user's membership; 404 when they were not a member."""
    user, room = request_user(request), _room(request)
    await request.app[HUB].leave_room(user, room)
    return web.json_response({"room": room, "channel": room_channel(room), "member": False})
