"""A crowd for the browser tests: many users in one room over plain aiohttp WebSockets.

The browser tests use Playwright's sync API, so the crowd runs its event loop in a thread of
its own; the test calls plain methods that wait (with a bound) for the loop to do the work.
Each connection keeps reading (and dropping) what it is sent, so no queue backs up on the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

from hub.auth import mint_token

T = TypeVar("T")

OPEN_AT_ONCE = 25
"""Connections opened concurrently: a few hundred join in a few seconds without a storm."""

WAIT_S = 60.0
"""Bound of every crowd action, in s (two cores also run Chromium and the hub)."""


class Crowd:
    """``count`` users ("Member 000", … with ids m000, …) who joined ``room`` on the hub at ``url``."""

    def __init__(self, url: str, secret: str, room: str, count: int) -> None:
        self.ws_url = url.replace("http://", "ws://", 1).rstrip("/") + "/ws"
        self.secret = secret
        self.room = room
        self.count = count
        self.sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._leaving: dict[str, asyncio.Future[None]] = {}  # user id -> resolved by its `left`
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def user(i: int) -> tuple[str, str]:
        """(id, name) of the crowd's i-th member."""
        return f"m{i:03d}", f"Member {i:03d}"

    def __enter__(self) -> Crowd:
        self._thread.start()
        try:
            self._run(self._join_all())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._run(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def join(self, user_id: str, name: str) -> None:
        """One more user opens a connection and joins the room."""
        self._run(self._open(user_id, name))

    def leave(self, user_id: str) -> None:
        """A member leaves the room (the `leave` frame) and waits for `left`."""
        self._run(self._leave(user_id))

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(work, WAIT_S), self._loop).result()

    async def _join_all(self) -> None:
        # No cap on connections: aiohttp's default (100) would hold the rest back forever.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        gate = asyncio.Semaphore(OPEN_AT_ONCE)

        async def one(i: int) -> None:
            async with gate:
                await self._open(*self.user(i))

        await asyncio.gather(*(one(i) for i in range(self.count)))

    async def _open(self, user_id: str, name: str) -> None:
        assert self._session is not None
        ws = await self._session.ws_connect(self.ws_url)
        self.sockets[user_id] = ws
        token = mint_token(self.secret, user_id, name, 600)
        await ws.send_json({"type": "hello", "token": token})
        await self._until(ws, "welcome")
        await ws.send_json({"type": "join", "room": self.room})
        await self._until(ws, "joined")
        self._readers.append(asyncio.create_task(self._drain(user_id, ws)))

    async def _leave(self, user_id: str) -> None:
        left = self._leaving[user_id] = asyncio.get_running_loop().create_future()
        await self.sockets[user_id].send_json({"type": "leave", "room": self.room})
        await left  # the drain task of that socket sees the `left`

    @staticmethod
    async def _until(ws: aiohttp.ClientWebSocketResponse, ftype: str) -> dict[str, Any]:
        """Frames up to the first of ``ftype`` (the rest are dropped)."""
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame: dict[str, Any] = json.loads(msg.data)
            if frame.get("type") == ftype:
                return frame
            if frame.get("type") == "error":
                raise AssertionError(f"crowd: error while waiting for {ftype}: {frame}")
        raise AssertionError(f"crowd: connection closed ({ws.close_code}) before {ftype}")

    async def _drain(self, user_id: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            left = self._leaving.get(user_id)
            if left and not left.done() and json.loads(msg.data).get("type") == "left":
                left.set_result(None)

    async def _close_all(self) -> None:
        for ws in self.sockets.values():
            await ws.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
