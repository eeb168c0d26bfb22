"""Typed application state shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from hub.core.hub import Hub
from hub.metrics import Metrics
from hub.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
