"""The address a request comes from, seen through the proxies the operator trusts."""

from __future__ import annotations

from aiohttp import web

from hub.web.keys import SETTINGS


def client_ip(request: web.Request) -> str:
    """The peer's address; behind a trusted proxy (HUB_TRUSTED_PROXIES), the one it reports.

    nginx sets ``X-Real-IP``; otherwise the last ``X-Forwarded-For`` entry is the one the
    trusted proxy added (earlier entries are whatever the client claimed).
    """
    remote = request.remote or ""
    if remote not in request.app[SETTINGS].trusted_proxies:
        return remote
    real = request.headers.get("X-Real-IP", "").strip()
    if real:
        return real[:64]
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    return forwarded[:64] or remote
