"""HTTP errors as JSON bodies shaped like the WebSocket ``error`` frame."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.broker.base import BrokerError
from hub.errors import ErrorCode, FrameError, HubError, unavailable

log = logging.getLogger(__name__)


def error_response(exc: HubError) -> web.Response:
    """Render a refusal as ``{"error": {code, message, retry_after?}}`` with its HTTP status."""
    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    headers = {}
    if exc.retry_after is not None:
        error["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.json_response({"error": error}, status=exc.status, headers=headers)


_HTTP_CODES: dict[int, ErrorCode] = {
    403: "forbidden",
    404: "not_found",
    413: "too_long",
    503: "unavailable",
}
"""aiohttp's own refusals that get the JSON error shape too."""


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the hub's exceptions into JSON answers; nothing reaches the client as a traceback."""
    try:
        return await handler(request)
    except HubError as exc:
        return error_response(exc)
    except BrokerError as exc:
        log.warning("broker error on %s: %s", request.path, exc)
        return error_response(unavailable())
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            raise
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if code == "too_long":
            text = "The request body is too large."
        retry = 1.0 if code == "unavailable" else None
        return error_response(FrameError(code, text or exc.reason, retry_after=retry))
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unexpected failure on %s %s", request.method, request.path)
        return error_response(FrameError("internal", "Something went wrong on the hub."))
