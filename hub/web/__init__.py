"""The aiohttp face of the hub: routes, WebSocket and SSE handlers, middlewares."""

from hub.web.app import create_app

__all__ = ["create_app"]
