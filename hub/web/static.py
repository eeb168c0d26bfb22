"""The web client: files of ``frontend/`` served as they are, with no build step."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"

_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


def static_handler(root: Path) -> Handler:
    """Serve ``root/index.html`` at ``/`` and every other file at its own path, nothing outside."""
    base = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("path", "") or "index.html"
        try:
            target = (base / rel).resolve()
            if target.is_dir():
                target = target / "index.html"
            found = target.is_relative_to(base) and target.is_file()
        except (ValueError, OSError):  # a NUL byte, a name too long for the file system
            found = False
        if not found:
            raise web.HTTPNotFound(text="Not found.")
        response = web.FileResponse(target)
        content_type = _TYPES.get(target.suffix)
        if content_type:
            response.content_type = content_type
        response.headers["Cache-Control"] = "no-cache"
        return response

    return handle
