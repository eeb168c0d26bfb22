"""The peer people pick today: python-socketio 5 on aiohttp, rooms shared through Redis.

Written from python-socketio's documentation: an ``AsyncServer`` with an
``AsyncRedisManager`` client manager, attached to an aiohttp application; each worker
process is started on its own port and all of them share one Redis.
Run: ``python -m deploy.bench.sio_server --port 8201 --redis redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import socketio
from aiohttp import web


def make_app(redis_url: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    app = web.Application()
    sio.attach(app)
    counter = itertools.count(1)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> None:
        name = str((auth or {}).get("name", "guest"))
        await sio.save_session(sid, {"id": name, "name": name, "role": "user"})

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> None:
        await sio.enter_room(sid, data["room"])
        await sio.emit("joined", {"room": data["room"]}, to=sid)

    @sio.event
    async def send(sid: str, data: dict[str, Any]) -> None:
        author = await sio.get_session(sid)
        now = int(time.time() * 1000)
        message = {
            "channel": data["channel"],
            "id": f"{now}-{next(counter)}",
            "author": author,
            "text": data["text"],
            "ts": now,
            "ref": data.get("ref"),
        }
        await sio.emit("message", message, room=data["channel"].removeprefix("room:"))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    args = parser.parse_args()
    web.run_app(make_app(args.redis), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
