"""Reads shared by everyone who asks at once: a join storm reads a room's head once, not 3,000 times."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """Each caller gets the result of a read that started after it asked, shared with every
    caller that asked while the previous read of the same key was running.

    So the answer is never older than the question (a joining user sees itself online), and a
    burst of N callers costs about two reads per key instead of N.
    """

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._running: dict[K, asyncio.Task[V]] = {}
        self._next: dict[K, asyncio.Task[V]] = {}
        self._tasks: set[asyncio.Task[V]] = set()

    async def get(self, key: K) -> V:
        """The value of ``key`` as read after this call began."""
        task = self._next.get(key)
        if task is None:
            task = asyncio.create_task(self._after_running(key), name="shared-read")
            self._tasks.add(task)
            task.add_done_callback(self._done)
            self._next[key] = task
        return await asyncio.shield(task)

    async def _after_running(self, key: K) -> V:
        running = self._running.get(key)
        if running is not None:
            await asyncio.wait([running])
        this = self._next.pop(key)
        self._running[key] = this
        try:
            return await self._read(key)
        finally:
            if self._running.get(key) is this:
                del self._running[key]

    def _done(self, task: asyncio.Task[V]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # its callers got it; nobody else needs to hear of it

    async def close(self) -> None:
        """Cancel the reads still running (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
