"""Broker frames to local connections: subscriptions per channel, last ids, catch-up after a blink."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Protocol

from hub.broker.base import BrokerError, ChannelLog, Envelope, Kind, PubSub, Replay, Replies
from hub.core.connection import Connection
from hub.core.presence import PresenceDiffs
from hub.core.registry import Registry
from hub.core.resume import Cursor
from hub.errors import CloseCode
from hub.metrics import Metrics
from hub.protocol import Delta, encode, frame_from_entry, parse_id
from hub.settings import Settings

FINISHED_KEPT = 4096
"""Ended replies remembered per worker, so a delta that arrives after its reply's end is dropped."""


class ChannelBroker(PubSub, ChannelLog, Replies, Protocol):
    """The broker roles fan-out uses."""


class Fanout:
    """Serialised once per publish, delivered to each local member's queue without waiting."""

    def __init__(
        self,
        settings: Settings,
        broker: ChannelBroker,
        registry: Registry,
        diffs: PresenceDiffs,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.diffs = diffs
        self.metrics = metrics
        self._subscribing: dict[str, asyncio.Task[None]] = {}
        self._last_ids: dict[str, str] = {}
        self._next_seq: dict[str, dict[str, int]] = {}
        """Per channel, per reply in flight: the next delta seq this worker has to deliver."""
        self._finished: dict[str, None] = {}
        self._cursors: dict[int, dict[str, Cursor]] = {}
        """Per connection: what its own resume gave it, so a catch-up does not repeat it."""

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
            self._next_seq.pop(channel, None)
            self.metrics.subscriptions.dec()
            with contextlib.suppress(BrokerError):
                await self.broker.unsubscribe(channel)

    def resumed(self, conn: Connection, cursors: dict[str, Cursor]) -> None:
        """Remember what a connection's resume gave it (until it closes): see ``catch_up``."""
        if cursors:
            self._cursors[conn.id] = cursors

    def forget(self, conn: Connection) -> None:
        """A connection closed."""
        self._cursors.pop(conn.id, None)

    def deliver(self, channel: str, frame: Envelope) -> None:
        """Hand a channel's frame to every local member (each queue bounded; no awaiting),
        except to connections whose own resume already gave it to them: a frame published
        before a resume read the log can reach this worker after the resume was sent."""
        if frame.kind is Kind.PRESENCE:
            self.diffs.add(channel, frame)
            return
        if not self._track(channel, frame):
            return
        cursors = self._cursors
        for conn in self.registry.in_channel(channel):
            cursor = cursors.get(conn.id, {}).get(channel) if cursors else None
            if cursor is None or cursor.admits(frame):
                conn.deliver(channel, frame)
        self.metrics.frames_out.inc(len(self.registry.by_channel.get(channel, ())))

    def _track(self, channel: str, frame: Envelope) -> bool:
        """Remember the newest id per channel and the next seq per reply; False for a frame
        already delivered (by the catch-up after a broker blink) or a delta after its end.

        Stored frames reach a worker in id order, so one whose id is not newer than the last
        seen was already delivered; a reply's deltas come in seq order likewise.
        """
        if frame.stored:
            last = self._last_ids.get(channel)
            if last is not None and parse_id(frame.id) <= parse_id(last):
                return False
            self._last_ids[channel] = frame.id
            if frame.reply:
                self._end(channel, frame.reply)
        elif frame.kind is Kind.DELTA:
            seqs = self._next_seq.setdefault(channel, {})
            if frame.reply in self._finished or frame.seq < seqs.get(frame.reply, 0):
                return False
            seqs[frame.reply] = frame.seq + 1
        return True

    def _end(self, channel: str, reply: str) -> None:
        self._next_seq.get(channel, {}).pop(reply, None)
        self._finished[reply] = None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]

    async def catch_up(self) -> None:
        """After a broker blink, give local connections what was stored and streamed while
        frames were lost: stored messages, then the missing deltas of replies in flight."""
        for channel, last in list(self._last_ids.items()):
            try:
                if last == "0-0":  # the log was empty when this worker subscribed
                    entries, _more = await self.broker.history(
                        channel, None, self.settings.outbound_queue // 2
                    )
                    replay: Replay | None = Replay(entries, await self.broker.inflight(channel))
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
                reply = str(json.loads(entry.body).get("reply") or "")
                self.deliver(channel, Envelope(Kind.MESSAGE, payload, entry.id, reply))
            for state in replay.replies:
                for seq, text in enumerate(state.deltas):
                    delta = Delta(channel=channel, reply=state.reply, seq=seq, text=text)
                    self.deliver(
                        channel, Envelope(Kind.DELTA, encode(delta), reply=state.reply, seq=seq)
                    )


def release(conn: Connection, cursors: dict[str, Cursor]) -> None:
    """Stop holding a connection's channel frames; queue those its replay did not already give."""
    for channel, frame in conn.release():
        cursor = cursors.get(channel)
        if cursor is None or cursor.admits(frame):
            conn.send_now(frame.payload)
