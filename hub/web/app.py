"""The aiohttp application factory: routes, middlewares and the life of the hub's tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from hub.broker import Broker, create_broker
from hub.core.hub import Hub
from hub.llm import LLM, create_llm
from hub.metrics import Metrics
from hub.settings import Settings
from hub.web import api, htmx, rooms, sse, tickets
from hub.web.cors import add_cors_headers, cors_preflight
from hub.web.errors import error_middleware
from hub.web.keys import HUB, METRICS, SETTINGS
from hub.web.security import body_deadline, security_headers_hook
from hub.web.static import FRONTEND, static_handler
from hub.web.ws import websocket


def create_app(
    settings: Settings,
    *,
    broker: Broker | None = None,
    llm: LLM | None = None,
    frontend: Path = FRONTEND,
) -> web.Application:
    """Build one worker; the broker connects and the hub's tasks start with the app."""
    settings.ensure_secret()
    metrics = Metrics()
    hub = Hub(
        settings,
        broker if broker is not None else create_broker(settings),
        llm if llm is not None else create_llm(settings),
        metrics,
    )
    app = web.Application(
        middlewares=[cors_preflight, error_middleware, body_deadline],
        client_max_size=settings.max_frame * 4,
    )
    app[SETTINGS] = settings
    app[HUB] = hub
    app[METRICS] = metrics

    async def hub_life(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.close()

    async def drain(app: web.Application) -> None:
        await hub.drain()

    app.cleanup_ctx.append(hub_life)
    app.on_shutdown.append(drain)
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(security_headers_hook(settings))
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_post("/api/login", api.login)
    app.router.add_get("/api/history", api.history)
    app.router.add_post("/api/chat", api.chat)
    app.router.add_get("/api/events", sse.events)
    app.router.add_post("/api/ticket", tickets.ticket)
    app.router.add_get("/api/replies/{reply}/events", htmx.reply_events)
    app.router.add_post("/api/rooms/{room}/join", rooms.join)
    app.router.add_post("/api/rooms/{room}/leave", rooms.leave)
    app.router.add_post("/api/publish", api.publish)
    app.router.add_get("/{path:.*}", static_handler(frontend))
    return app
