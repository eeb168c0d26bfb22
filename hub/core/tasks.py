"""Background tasks of one owner: each is logged if it fails and cancelled on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from hub.broker.base import BrokerError

log = logging.getLogger(__name__)


def stop_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop.

    For loops that log and go on after errors: a library that turns a cancellation into an
    error of its own (or swallows it) must not keep such a loop alive through shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def every(
    period: float,
    step: Callable[[], Awaitable[object]],
    what: str,
    *,
    wait_first: bool = False,
    broker_log: int = logging.WARNING,
) -> None:
    """Run ``step`` every ``period`` seconds until cancelled. A broker that is down only skips
    a round (logged at ``broker_log``); any other failure is logged with its traceback; the
    loop goes on either way."""
    while True:
        if wait_first:
            await asyncio.sleep(period)
        try:
            await step()
        except BrokerError as exc:
            log.log(broker_log, "%s skipped: %s", what, exc)
        except Exception:
            log.exception("%s failed", what)
        stop_if_cancelled()
        if not wait_first:
            await asyncio.sleep(period)


class Tasks:
    """A set of named tasks that forgets each one as it ends."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task owned here."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
