"""A test client for the hub's WebSocket protocol: send frames, wait for the ones a user would see."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.support.presence_view import online_view

DEFAULT_TIMEOUT = 10.0


class Closed(Exception):
    """The server closed the connection; ``code`` is its close code."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class WsClient:
    """Keeps every frame received, so tests can check what arrived and how often."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def _next(self, timeout: float) -> dict[str, Any]:
        if self._unread:
            return self._unread.pop(0)
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            raise Closed(self.ws.close_code)
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise Closed(self.ws.close_code)
        frame: dict[str, Any] = json.loads(msg.data)
        self.received.append(frame)
        return frame

    async def expect(
        self, ftype: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """The next frame of ``ftype`` whose fields match; frames passed over stay readable."""
        skipped: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(f"no {ftype} {fields} within {timeout}s; saw {skipped}")
                try:
                    frame = await self._next(remaining)
                except TimeoutError:
                    raise AssertionError(
                        f"no {ftype} {fields} within {timeout}s; saw {skipped}"
                    ) from None
                if frame.get("type") == ftype and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
                skipped.append(frame)
        finally:
            self._unread[:0] = skipped

    async def expect_online(
        self, room: str, ids: set[str], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, str]:
        """Read until the client's view of who is online in ``room`` (snapshot, then diffs)
        is exactly ``ids``; frames read meanwhile stay readable for ``expect``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        read: list[dict[str, Any]] = []
        try:
            while True:
                view = online_view(self.received, room) or {}
                if set(view) == ids:
                    return view
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(f"{room} shows {sorted(view)} online, not {sorted(ids)}")
                try:
                    read.append(await self._next(remaining))
                except TimeoutError:
                    continue
        finally:
            self._unread[:0] = read

    async def reply(
        self, channel: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Deltas of the next reply (in arrival order) and its done."""
        fields = {"channel": channel} if channel else {}
        done = await self.expect("done", timeout, **fields)
        deltas = [
            f for f in self.received if f.get("type") == "delta" and f["reply"] == done["reply"]
        ]
        self._unread = [
            f
            for f in self._unread
            if not (f.get("type") == "delta" and f.get("reply") == done["reply"])
        ]
        return deltas, done

    async def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Every frame that arrives until the line has been quiet for ``quiet`` seconds."""
        frames = list(self._unread)
        self._unread.clear()
        while True:
            try:
                frames.append(await self._next(quiet))
            except TimeoutError:
                return frames

    def count(self, ftype: str, **fields: Any) -> int:
        """How many frames of a type with these fields arrived in all."""
        return sum(
            1
            for f in self.received
            if f.get("type") == ftype and all(f.get(k) == v for k, v in fields.items())
        )

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    resume: dict[str, str] | None = None,
    **headers: str,
) -> WsClient:
    """Open /ws, say hello, and wait for the welcome."""
    ws = await session.ws_connect(url, headers=headers or None)
    client = WsClient(ws)
    hello: dict[str, Any] = {"type": "hello", "token": token}
    if resume is not None:
        hello["resume"] = resume
    await client.send(**hello)
    client.welcome = await client.expect("welcome")
    return client
