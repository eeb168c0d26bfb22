"""One client connection as the core sees it: a user, a bounded outbound queue, one writer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from hub.errors import CloseCode
from hub.protocol import User

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class Sink(Protocol):
    """The transport under a connection (a WebSocket, an SSE response)."""

    async def send(self, payload: str) -> None:
        """Write one frame; may wait while the peer is slow."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the transport with a protocol close code."""
        ...


class Connection:
    """A sender never awaits this connection: frames go to a bounded queue drained by one task."""

    def __init__(
        self,
        user: User,
        sink: Sink,
        max_queue: int,
        *,
        max_bytes: int = 4 * 1024 * 1024,
        transport: str = "ws",
        peer: str = "",
    ) -> None:
        self.id = next(_ids)
        self.user = user
        self.transport = transport
        self.peer = peer  # the client's address, for per-address limits
        self.channels: set[str] = set()
        self._sink = sink
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(max_queue)
        self._max_bytes = max_bytes
        self.queued_bytes = 0
        self.on_close: Callable[[], None] | None = None
        """Called when the hub closes the connection as too slow: the reader stops waiting on
        a peer that may never send again (other closes let the reader see the peer's answer)."""
        self.history_pending: str | None = None
        """The ``history`` answer queued and not written yet (one in flight per connection)."""
        self._held: list[tuple[str, str]] | None = []
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.close_code: int | None = None
        self._pending_close = (1000, "")
        self._closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task; frames held since creation wait until ``release``."""
        self._writer = asyncio.create_task(self._write_loop(), name=f"conn-{self.id}-writer")

    def deliver(self, channel: str, payload: str) -> None:
        """Queue a frame of ``channel`` without waiting; overflow closes the connection with 4008."""
        if self.closed:
            return
        if self._held is not None:
            self._held.append((channel, payload))
            return
        self.send_now(payload)

    def send_now(self, payload: str) -> None:
        """Queue a frame for this connection only (replies, errors), bypassing the hold."""
        if self.closed:
            return
        size = len(payload)
        if self.queued_bytes + size > self._max_bytes or self._queue.full():
            log.info("connection %s of %s is too slow; closing 4008", self.id, self.user.id)
            self.close(
                CloseCode.TOO_SLOW, "too slow: outbound queue overflowed; reconnect and resume"
            )
            return
        self.queued_bytes += size
        self._queue.put_nowait(payload)

    def hold(self) -> None:
        """Keep channel frames aside (while a welcome and a replay are being queued)."""
        if self._held is None:
            self._held = []

    def release(self) -> list[tuple[str, str]]:
        """Stop holding; return what was held so the caller can filter and queue it."""
        held, self._held = self._held or [], None
        return held

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued are written; safe to call from any context."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._pending_close = (code, reason)
        if code == CloseCode.TOO_SLOW and self.on_close is not None:
            self.on_close()
        if code == CloseCode.TOO_SLOW and self._writer is not None:
            # The writer may be stuck on a peer that does not read: drop it and the backlog.
            self._writer.cancel()
            self._closer = asyncio.create_task(self._sink.close(code, reason))
            return
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def wait_closed(self, timeout: float) -> None:
        """Wait (bounded) for the writer and closer to finish, then make sure they are gone."""
        tasks = [t for t in (self._writer, self._closer) if t is not None]
        if not tasks:
            return
        await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_loop(self) -> None:
        try:
            while True:
                payload = await self._queue.get()
                if payload is None:
                    break
                await self._sink.send(payload)
                self.queued_bytes -= len(payload)
                if payload is self.history_pending:
                    self.history_pending = None
        except (ConnectionError, RuntimeError) as exc:
            log.debug("connection %s write failed: %s", self.id, exc)
            self.closed = True
            return
        code, reason = self._pending_close
        with contextlib.suppress(Exception):
            await self._sink.close(code, reason)
