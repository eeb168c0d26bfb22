"""Broker frames to local connections: subscriptions per channel, last ids, catch-up after a blink."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from hub.broker.base import BrokerError, ChannelLog, Envelope, Kind, PubSub, Replay
from hub.core.connection import Connection
from hub.core.registry import Registry
from hub.core.resume import Cursor
from hub.core.watchdog import Watchdog
from hub.errors import CloseCode
from hub.metrics import Metrics
from hub.protocol import frame_from_entry, parse_id
from hub.settings import Settings


class ChannelBroker(PubSub, ChannelLog, Protocol):
    """The broker roles fan-out uses."""


class Fanout:
    """Serialised once per publish, delivered to each local member's queue without waiting."""

    def __init__(
        self,
        settings: Settings,
        broker: ChannelBroker,
        registry: Registry,
        watchdog: Watchdog,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.watchdog = watchdog
        self.metrics = metrics
        self._subscribing: dict[str, asyncio.Task[None]] = {}
        self._last_ids: dict[str, str] = {}

    async def attach(self, conn: Connection, channel: str) -> None:
        """Put a connection in a channel; the first local member subscribes this worker."""
        if self.registry.join(conn, channel):
            task = asyncio.ensure_future(self.broker.subscribe(channel))
            self._subscribing[channel] = task
            try:
                await task
                if channel not in self._last_ids:
                    # The point to replay from if the broker blinks before this channel speaks.
                    latest, _more = await self.broker.history(channel, None, 1)
                    self._last_ids[channel] = latest[-1].id if latest else "0-0"
            finally:
                self._subscribing.pop(channel, None)
            self.metrics.subscriptions.inc()
        elif channel in self._subscribing:
            await asyncio.shield(self._subscribing[channel])

    async def detach(self, conn: Connection, channel: str) -> None:
        """Take a connection out of a channel; the last local member unsubscribes this worker."""
        if self.registry.part(conn, channel):
            self._last_ids.pop(channel, None)
            self.metrics.subscriptions.dec()
            with contextlib.suppress(BrokerError):
                await self.broker.unsubscribe(channel)

    def deliver(self, channel: str, frame: Envelope) -> None:
        """Hand a channel's frame to every local member (each queue bounded; no awaiting)."""
        if not self._track(channel, frame):
            return
        conns = self.registry.in_channel(channel)
        for conn in conns:
            conn.deliver(channel, frame.payload)
        self.metrics.frames_out.inc(len(self.registry.by_channel.get(channel, ())))

    def _track(self, channel: str, frame: Envelope) -> bool:
        """Remember the newest id per channel; False for a stored frame already delivered.

        Stored frames reach a worker in id order, so one whose id is not newer than the last
        seen was already delivered (by the replay after a broker blink).
        """
        if frame.stored:
            last = self._last_ids.get(channel)
            if last is not None and parse_id(frame.id) <= parse_id(last):
                return False
            self._last_ids[channel] = frame.id
        self.watchdog.note(channel, frame)
        return True

    async def catch_up(self) -> None:
        """After a broker blink, give local connections what was stored while frames were lost."""
        for channel, last in list(self._last_ids.items()):
            try:
                if last == "0-0":  # the log was empty when this worker subscribed
                    entries, _more = await self.broker.history(
                        channel, None, self.settings.outbound_queue // 2
                    )
                    replay: Replay | None = Replay(entries, [])
                else:
                    replay = await self.broker.replay(channel, last)
            except BrokerError:
                return
            if replay is None:
                for conn in list(self.registry.in_channel(channel)):
                    conn.close(CloseCode.RESTARTING, "history changed; reconnect and resume")
                continue
            for entry in replay.entries:
                payload = frame_from_entry("message", entry.id, entry.body)
                self.deliver(channel, Envelope(Kind.MESSAGE, payload, entry.id))


def release(conn: Connection, cursors: dict[str, Cursor]) -> None:
    """Stop holding a connection's channel frames; queue those its replay did not already give."""
    for channel, payload in conn.release():
        cursor = cursors.get(channel)
        if cursor is None or cursor.admits(payload):
            conn.send_now(payload)
