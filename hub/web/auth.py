"""Bearer tokens on HTTP requests."""

from __future__ import annotations

import hmac

from aiohttp import web

from hub.auth import AuthError, verify_token
from hub.errors import FrameError
from hub.protocol import User
from hub.web.keys import SETTINGS


def bearer(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer`` header, or a 401 that says how to send it."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FrameError("unauthorized", "Send 'Authorization: Bearer <token>'.")
    return token.strip()


def request_user(request: web.Request) -> User:
    """The signed-in user of a request, or a 401 naming what is wrong with the token."""
    try:
        settings = request.app[SETTINGS]
        return verify_token(settings.secret_value(), bearer(request), settings.token_max_ttl)
    except AuthError as exc:
        raise FrameError("unauthorized", str(exc)) from None


def require_api_key(request: web.Request) -> None:
    """Backends authenticate with the server API key (HUB_API_KEY); without one the route is off."""
    key = request.app[SETTINGS].api_key
    if key is None:
        raise FrameError("not_found", "The publish API is off; set HUB_API_KEY to enable it.")
    if not hmac.compare_digest(bearer(request), key.get_secret_value()):
        raise FrameError("unauthorized", "That server API key is not valid.")
