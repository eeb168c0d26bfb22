"""HTTP errors as JSON bodies shaped like the WebSocket ``error`` frame."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.broker.base import BrokerError
from hub.protocol import FrameError

log = logging.getLogger(__name__)

STATUS = {
    "bad_frame": 400,
    "unknown_type": 400,
    "invalid": 400,
    "too_long": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "llm_unavailable": 503,
    "llm_error": 502,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    """An HTTP answer other than success, carried up to the middleware."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def json_error(status: int, code: str, message: str, retry_after: float | None = None) -> ApiError:
    """An error to raise from a handler; the body is ``{"error": {code, message, retry_after?}}``."""
    return ApiError(status, code, message, retry_after)


def error_response(exc: ApiError) -> web.Response:
    """Render an ApiError."""
    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    headers = {}
    if exc.retry_after is not None:
        error["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.json_response({"error": error}, status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the hub's exceptions into JSON answers; nothing reaches the client as a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except FrameError as exc:
        return error_response(ApiError(STATUS[exc.code], exc.code, exc.message, exc.retry_after))
    except BrokerError as exc:
        log.warning("broker error on %s: %s", request.path, exc)
        return error_response(
            ApiError(
                503,
                "unavailable",
                "The hub cannot reach its message store right now; try again in a moment.",
                1.0,
            )
        )
