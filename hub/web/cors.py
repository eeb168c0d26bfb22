"""CORS, so the web client can be embedded on other sites that the operator allows."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.web.keys import SETTINGS
from hub.web.origin import origin_allowed

_HTMX_REQUEST = (
    "HX-Request, HX-Current-URL, HX-Target, HX-Trigger, HX-Trigger-Name, HX-Boosted, "
    "HX-Prompt, HX-History-Restore-Request"
)
_HTMX_RESPONSE = (
    "HX-Location, HX-Push, HX-Push-Url, HX-Redirect, HX-Refresh, HX-Replace-Url, HX-Reswap, HX-Retarget, "
    "HX-Reselect, HX-Trigger, HX-Trigger-After-Settle, HX-Trigger-After-Swap"
)
_API_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": f"Authorization, Content-Type, Last-Event-ID, {_HTMX_REQUEST}",
    # htmx-ext-sse opens EventSource with credentials; the hub sets no cookies, so this opens
    # nothing more than the Bearer token and tickets already do.
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Expose-Headers": f"Retry-After, {_HTMX_RESPONSE}",
    "Access-Control-Max-Age": "600",
}

_PRIVATE = frozenset({"/metrics", "/health", "/ws"})
"""Paths no other site's page may read: the operator's, not the web client's."""


def _allowed(request: web.Request) -> bool:
    """Static files are public to any page; the API answers only allowed origins."""
    return not request.path.startswith("/api/") or origin_allowed(request, request.app[SETTINGS])


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a browser's preflight (OPTIONS) before routing turns it into a 405."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if "Origin" not in request.headers or not _allowed(request):
            raise web.HTTPForbidden(text="This origin is not in HUB_ALLOWED_ORIGINS.")
        return web.Response(status=204)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: stamp every answer, streamed ones included, before its headers go."""
    origin = request.headers.get("Origin")
    if origin is None or not _allowed(request):
        return
    if request.path.startswith("/api/"):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers.update(_API_HEADERS)
    elif request.path not in _PRIVATE:
        response.headers["Access-Control-Allow-Origin"] = "*"
