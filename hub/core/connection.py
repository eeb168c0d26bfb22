"""One client connection as the core sees it: a user, a direct write, a bounded backlog."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol, runtime_checkable

from hub.broker.base import Envelope
from hub.errors import CloseCode
from hub.protocol import User

log = logging.getLogger(__name__)

_ids = itertools.count(1)

_WRITE_ERRORS = (ConnectionError, RuntimeError)


class Sink(Protocol):
    """The transport under a connection (a WebSocket, an SSE response)."""

    async def send(self, payload: str) -> None:
        """Write one frame; may wait while the peer is slow."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the transport with a protocol close code."""
        ...


@runtime_checkable
class DirectSink(Sink, Protocol):
    """A sink that can write a frame in the sender's context (whatever task that is)."""

    def write_now(self, payload: str) -> Awaitable[None] | None:
        """Write now; None when done, else what is left to await while the peer pushes back."""
        ...


class _Rest:
    """The rest of a coroutine that suspended in the sender's context, run by a task."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, None, None]:
        pending, self._first = self._first, None
        while True:
            try:
                yield pending
            except BaseException as exc:  # a cancel goes to the coroutine, which may clean up
                try:
                    pending = self._coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = self._coro.send(None)
                except StopIteration:
                    return


def write_eagerly(coro: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run ``coro`` now up to its first wait: None when it finished, else what is left of it."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, first)


class Connection:
    """A sender never awaits this connection: a frame is written at once while the peer keeps
    up (a ``DirectSink``); once the transport pushes back (or for other sinks), frames wait in a
    bounded backlog drained by one task that ends when the backlog is empty (an idle connection
    holds no task and no queue)."""

    __slots__ = (
        "_backlog",
        "_closer",
        "_direct",
        "_held",
        "_max_bytes",
        "_max_queue",
        "_sink",
        "_started",
        "_writer",
        "channels",
        "close_code",
        "closed",
        "history_pending",
        "id",
        "on_close",
        "peer",
        "queued_bytes",
        "transport",
        "user",
    )

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
        self._direct = sink if isinstance(sink, DirectSink) else None
        self._max_queue = max_queue
        self._max_bytes = max_bytes
        self._backlog: deque[str | tuple[int, str]] | None = None
        """Frames waiting while the transport pushes back; a (code, reason) closes after them."""
        self.queued_bytes = 0
        self.on_close: Callable[[], None] | None = None
        """Called when the hub closes the connection as too slow: the reader stops waiting on
        a peer that may never send again (other closes let the reader see the peer's answer)."""
        self.history_pending: str | None = None
        """The ``history`` answer queued and not written yet (one in flight per connection)."""
        self._held: list[tuple[str, Envelope]] | None = []
        self._writer: asyncio.Task[None] | None = None
        self._started = False
        self.closed = False
        self.close_code: int | None = None
        self._closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Allow writes; frames queued before this are written now, in order."""
        self._started = True
        if self._backlog is not None and self._writer is None:
            self._writer = asyncio.create_task(self._drain(None, ""), name=f"conn-{self.id}")

    def deliver(self, channel: str, frame: Envelope) -> None:
        """Send a frame of ``channel`` without waiting; overflow closes the connection with 4008."""
        if self.closed:
            return
        if self._held is not None:
            self._held.append((channel, frame))
            return
        self.send_now(frame.payload)

    def send_now(self, payload: str) -> None:
        """Send a frame for this connection only (replies, errors), bypassing the hold."""
        if self.closed:
            return
        backlog = self._backlog
        if backlog is None:
            if self._started and self._direct is not None:
                self._write_direct(self._direct, payload)
                return
            backlog = self._backlog = deque()
            if self._started:
                self._writer = asyncio.create_task(self._drain(None, ""), name=f"conn-{self.id}")
        size = len(payload)
        if self.queued_bytes + size > self._max_bytes or len(backlog) >= self._max_queue:
            log.info("connection %s of %s is too slow; closing 4008", self.id, self.user.id)
            self.close(
                CloseCode.TOO_SLOW, "too slow: outbound queue overflowed; reconnect and resume"
            )
            return
        self.queued_bytes += size
        backlog.append(payload)

    def _write_direct(self, sink: DirectSink, payload: str) -> None:
        """Write now; if the transport pushes back, a writer finishes it and drains what follows."""
        try:
            rest = sink.write_now(payload)
        except Exception as exc:  # the sender (a fan-out) must not fail for one peer
            self._write_failed(exc)
            return
        if rest is None:
            if payload is self.history_pending:
                self.history_pending = None
            return
        self._backlog = deque()
        self.queued_bytes += len(payload)
        self._writer = asyncio.create_task(self._drain(rest, payload), name=f"conn-{self.id}")

    def _write_failed(self, exc: BaseException) -> None:
        log.debug("connection %s write failed: %s", self.id, exc)
        self.closed = True
        self._backlog = None

    def hold(self) -> None:
        """Keep channel frames aside (while a welcome and a replay are being queued)."""
        if self._held is None:
            self._held = []

    def release(self) -> list[tuple[str, Envelope]]:
        """Stop holding; return what was held so the caller can filter and queue it."""
        held, self._held = self._held or [], None
        return held

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued are written; safe to call from any context."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if code == CloseCode.TOO_SLOW and self.on_close is not None:
            self.on_close()
        if code == CloseCode.TOO_SLOW:
            # The writer may be stuck on a peer that does not read: drop it and the backlog.
            if self._writer is not None:
                self._writer.cancel()
            self._backlog = None
        elif self._backlog is not None:
            self._backlog.append((code, reason))  # the writer (or ``start``) closes after it
            return
        self._closer = asyncio.create_task(self._close_sink(code, reason))

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

    async def _close_sink(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._sink.close(code, reason)

    async def _drain(self, rest: Awaitable[None] | None, payload: str) -> None:
        """Finish the write that met backpressure, then the backlog; end when it is empty."""
        try:
            if rest is not None:
                await rest
                self._written(payload)
            backlog = self._backlog
            while backlog:
                item = backlog.popleft()
                if isinstance(item, tuple):
                    self._backlog = None
                    await self._close_sink(*item)
                    return
                await self._sink.send(item)
                self._written(item)
        except _WRITE_ERRORS as exc:
            self._write_failed(exc)
            return
        self._backlog = None
        self._writer = None

    def _written(self, payload: str) -> None:
        self.queued_bytes -= len(payload)
        if payload is self.history_pending:
            self.history_pending = None
