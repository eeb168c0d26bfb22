"""Access log lines without query strings: tickets (and anything else put in a URL) stay out of logs."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class AccessLogger(AbstractAccessLogger):
    """``remote "METHOD /path HTTP/x.y" status bytes seconds``: the path only, never ``?…``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = f"{request.version.major}.{request.version.minor}"
        self.logger.info(
            '%s "%s %s HTTP/%s" %s %s %.3f',
            request.remote,
            request.method,
            request.path,
            version,
            response.status,
            response.body_length,
            time,
        )
