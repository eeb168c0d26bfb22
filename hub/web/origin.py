"""Which browser origins may open a WebSocket or call the API with a token."""

from __future__ import annotations

from aiohttp import web

from hub.settings import Settings


def own_origin(request: web.Request) -> str:
    """The origin the browser used to reach this hub, as a proxy forwarded it."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{scheme}://{host}".lower()


def origin_allowed(request: web.Request, settings: Settings) -> bool:
    """No Origin (not a browser), the hub's own origin, or one listed in HUB_ALLOWED_ORIGINS."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    allowed = {o.lower() for o in settings.allowed_origins}
    return "*" in allowed or origin in allowed or origin == own_origin(request)
