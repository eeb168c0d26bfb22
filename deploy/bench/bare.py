"""The ceiling: one aiohttp process that fans frames out to a room, with no broker and no checks.

It speaks the subset of the hub's protocol the load generator uses (``POST /api/login``,
``hello``, ``join``, ``send`` → ``message``), so hub and bare run the same client code.
Run: ``python -m deploy.bench.bare --port 8101``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from aiohttp import WSMsgType, web


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))  # compact, as the hub sends


ROOMS = web.AppKey("rooms", dict[str, set[web.WebSocketResponse]])


async def login(request: web.Request) -> web.Response:
    name = str((await request.json()).get("name", "guest"))
    return web.json_response({"token": name, "user": {"id": name, "name": name}})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    rooms = request.app[ROOMS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    user: dict[str, str] = {"id": "?", "name": "?", "role": "user"}
    joined: set[str] = set()
    counter = 0
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame: dict[str, Any] = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "hello":
                user = {"id": frame["token"], "name": frame["token"], "role": "user"}
                await ws.send_str(_dumps({"type": "welcome", "worker": "bare", "user": user}))
            elif kind == "join":
                channel = f"room:{frame['room']}"
                rooms.setdefault(channel, set()).add(ws)
                joined.add(channel)
                await ws.send_str(_dumps({"type": "joined", "room": frame["room"]}))
            elif kind == "send":
                counter += 1
                payload = _dumps(
                    {
                        "type": "message",
                        "channel": frame["channel"],
                        "id": f"{int(time.time() * 1000)}-{counter}",
                        "author": user,
                        "text": frame["text"],
                        "ts": int(time.time() * 1000),
                        "ref": frame.get("ref"),
                    }
                )
                for member in list(rooms.get(frame["channel"], ())):
                    if not member.closed:
                        await member.send_str(payload)
    finally:
        for channel in joined:
            rooms.get(channel, set()).discard(ws)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_post("/api/login", login)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", websocket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
