"""Core modules under test on the embedded broker, with no sockets: connections write to lists."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hub.broker.memory import MemoryBroker
from hub.core.connection import Connection
from hub.core.hub import Hub
from hub.llm.echo import EchoLLM
from hub.metrics import Metrics
from hub.protocol import User
from hub.settings import Settings

WAIT = 5.0
"""Upper bound of every wait here; reaching it fails the test, it is not a timing."""


class ListSink:
    """A transport that keeps every frame written to it, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.changed = asyncio.Event()

    async def send(self, payload: str) -> None:
        self.frames.append(json.loads(payload))
        self.changed.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.changed.set()

    def of(self, ftype: str) -> list[dict[str, Any]]:
        """Frames of one type, in order."""
        return [f for f in self.frames if f["type"] == ftype]

    async def until(self, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Wait until ``check()`` is truthy; fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not (result := check()):
                self.changed.clear()
                await self.changed.wait()
            return result


def make_settings(**overrides: Any) -> Settings:
    """Settings of a quick hub: the echo assistant without delay, short leases."""
    values: dict[str, Any] = {
        "secret": "s" * 40,
        "llm": "echo",
        "echo_delay": 0.0,
        "delta_interval": 0.0,
        "worker_id": "w1",
    }
    values.update(overrides)
    return Settings(**values)


class CoreHub:
    """A started Hub on a MemoryBroker, with helpers to open sessions."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.conns: list[Connection] = []

    async def open(
        self, user_id: str, resume: dict[str, str] | None = None, name: str | None = None
    ) -> tuple[Connection, ListSink]:
        sink = ListSink()
        conn = Connection(User(id=user_id, name=name or user_id.title()), sink, 64)
        conn.start()
        self.conns.append(conn)
        await self.hub.open_session(conn, resume)
        await sink.until(lambda: sink.of("welcome"))
        return conn, sink

    async def close(self, conn: Connection) -> None:
        conn.close(1000, "")
        await self.hub.close_session(conn)
        await conn.wait_closed(1.0)


@contextlib.asynccontextmanager
async def started(hub: Hub) -> AsyncIterator[CoreHub]:
    """A started hub; at the end its connections close, then the hub."""
    await hub.start()
    wrapper = CoreHub(hub)
    try:
        yield wrapper
    finally:
        for conn in wrapper.conns:
            conn.close(1000, "")
            await conn.wait_closed(1.0)
        await hub.close()


@pytest.fixture
async def core() -> AsyncIterator[CoreHub]:
    settings = make_settings()
    async with started(
        Hub(settings, MemoryBroker(history_max=100), EchoLLM(0.0), Metrics())
    ) as hub:
        yield hub
