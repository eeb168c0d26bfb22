"""A Python client of the hub: reconnects with backoff and jitter, resumes, never shows a frame twice.

async with HubClient("http://127.0.0.1:8080", token) as client:
    await client.send("hello")
    async for frame in client.frames():
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp

from hub.errors import CloseCode, ErrorCode, HubError
from hub.protocol import parse_id

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
MAX_ATTEMPTS = 1000
"""Reconnect attempts before the client gives up (about 8 hours at the backoff cap)."""


def new_ref() -> str:
    """A fresh ``ref`` for a frame this client sends."""
    return "c" + secrets.token_hex(8)


class HubClientError(HubError):
    """The hub refused the client for good (bad token) or answered a request with an error."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class HubClient:
    """One user's connection that survives drops: ``frames()`` yields each frame once, in order."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        base = url.rstrip("/")
        self.ws_url = base.replace("http", "ws", 1) + "/ws" if base.startswith("http") else base
        self.token = token
        self.backoff_max = backoff_max
        self.last_ids: dict[str, str] = {}
        self.workers: list[str] = []
        self.channels: list[str] = []
        self.user: dict[str, str] = {}
        self.state = "idle"
        self.reconnects = 0
        self.raw: list[dict[str, Any]] = []
        """Every frame as the server sent it, before deduplication (for tests and debugging)."""
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._next_seq: dict[str, int] = {}
        self._finished: set[str] = set()
        self._welcomed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fatal: HubClientError | None = None

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        """Start the connection loop and wait for the first welcome."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="hub-client")
        waiter = asyncio.create_task(self._welcomed.wait())
        await asyncio.wait({waiter, self._task}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiter.cancel()
        if self._fatal is not None:
            raise self._fatal
        if not self._welcomed.is_set():
            raise HubClientError("unavailable", f"no welcome from {self.ws_url} in {timeout} s")

    async def close(self) -> None:
        """Close for good: no reconnect, pending sends fail."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _frame, future in self._pending.values():
            if not future.done():
                future.set_exception(HubClientError("unavailable", "the client was closed"))
        if self._own_session and self._session is not None:
            await self._session.close()
        self.state = "closed"

    async def frames(self) -> AsyncIterator[dict[str, Any]]:
        """Every frame of the user's channels once, across reconnects."""
        while True:
            yield await self._queue.get()

    async def next_frame(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame, or TimeoutError."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def send(self, text: str, channel: str | None = None, timeout: float = 30.0) -> str:
        """Post a message and return its id; a drop before the ack re-sends it with the same ref."""
        frame: dict[str, Any] = {"type": "send", "text": text}
        if channel is not None:
            frame["channel"] = channel
        ack = await self.request(frame, timeout)
        return str(ack["id"])

    async def join(self, room: str, timeout: float = 10.0) -> dict[str, Any]:
        """Join a room; returns the ``joined`` frame."""
        return await self.request({"type": "join", "room": room}, timeout)

    async def leave(self, room: str, timeout: float = 10.0) -> dict[str, Any]:
        """Leave a room; returns the ``left`` frame."""
        return await self.request({"type": "leave", "room": room}, timeout)

    async def stop(self, reply: str) -> None:
        """Ask the hub to stop a streaming reply (the ``done`` arrives as a frame)."""
        await self._write({"type": "stop", "reply": reply, "ref": new_ref()})

    async def history(
        self, channel: str, before: str | None = None, limit: int = 50, timeout: float = 10.0
    ) -> dict[str, Any]:
        """A page of history; returns the ``history`` frame."""
        frame: dict[str, Any] = {"type": "history", "channel": channel, "limit": limit}
        if before:
            frame["before"] = before
        return await self.request(frame, timeout)

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a frame with a fresh ref and wait for the answer that echoes it."""
        ref = new_ref()
        frame = {**frame, "ref": ref}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (frame, future)
        try:
            if self.state == "open":
                await self._write(frame)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ref, None)

    async def _write(self, frame: dict[str, Any]) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps(frame))

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        for _attempt in range(MAX_ATTEMPTS):
            if self._closing:
                return
            code: int | None = None
            try:
                code = await self._session_once()
                delay = BACKOFF_FIRST if self.state == "open" else delay
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("hub connection failed: %s", exc)
            if self._closing:
                return
            if code == CloseCode.UNAUTHORIZED:
                self._fatal = self._fatal or HubClientError("unauthorized", "token refused")
                self.state = "closed"
                return
            self.state = "reconnecting"
            self.reconnects += 1
            if code == CloseCode.RESTARTING:
                await asyncio.sleep(random.uniform(0, 0.1))  # "reconnect at once", spread a little
                continue
            wait = delay * 4 if code == CloseCode.ABUSE else delay
            await asyncio.sleep(random.uniform(wait / 2, wait))
            delay = min(delay * 2, self.backoff_max)
        self.state = "closed"

    async def _session_once(self) -> int | None:
        assert self._session is not None
        self.state = "connecting"
        async with self._session.ws_connect(self.ws_url, heartbeat=30) as ws:
            self._ws = ws
            hello: dict[str, Any] = {"type": "hello", "token": self.token}
            if self.last_ids:
                hello["resume"] = dict(self.last_ids)
            await ws.send_str(json.dumps(hello))
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.raw.append(frame)
                await self._on_frame(frame)
            return ws.close_code

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        ftype = frame.get("type")
        ref = frame.get("ref")
        if ftype == "welcome":
            await self._on_welcome(frame)
            return
        if ftype == "error" and frame.get("code") == "unauthorized":
            self._fatal = HubClientError("unauthorized", str(frame.get("message")))
        if ref in self._pending and ftype in ("ack", "joined", "left", "history", "error", "pong"):
            _sent, future = self._pending[ref]
            if not future.done():
                if ftype == "error":
                    future.set_exception(
                        HubClientError(
                            cast("ErrorCode", str(frame["code"])),
                            str(frame["message"]),
                            retry_after=frame.get("retry_after"),
                        )
                    )
                else:
                    future.set_result(frame)
        if ftype in ("message", "done") and not self._fresh_message(frame):
            return
        if ftype == "delta" and not self._fresh_delta(frame):
            return
        if ftype in ("ack", "pong", "history") and ref in self._pending:
            return
        self._queue.put_nowait(frame)

    async def _on_welcome(self, frame: dict[str, Any]) -> None:
        self.user = frame["user"]
        self.channels = list(frame["channels"])
        self.workers.append(str(frame["worker"]))
        for channel, ok in frame.get("resumed", {}).items():
            if not ok:
                self.last_ids.pop(channel, None)
                self._queue.put_nowait({"type": "reload", "channel": channel})
        self.state = "open"
        self._welcomed.set()
        self._queue.put_nowait(frame)
        for sent, future in list(self._pending.values()):
            if not future.done():
                await self._write(sent)

    def _fresh_message(self, frame: dict[str, Any]) -> bool:
        channel, mid = str(frame["channel"]), str(frame["id"])
        last = self.last_ids.get(channel)
        if last is not None and parse_id(mid) <= parse_id(last):
            return False
        self.last_ids[channel] = mid
        reply = frame.get("reply")
        if reply:
            self._finished.add(str(reply))
            self._next_seq.pop(str(reply), None)
        return True

    def _fresh_delta(self, frame: dict[str, Any]) -> bool:
        reply, seq = str(frame["reply"]), int(frame["seq"])
        if reply in self._finished or seq < self._next_seq.get(reply, 0):
            return False
        self._next_seq[reply] = seq + 1
        return True
