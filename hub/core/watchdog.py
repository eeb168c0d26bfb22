"""Replies whose worker died: noticed from the frames a worker sees and the leases in the broker."""

from __future__ import annotations

import time

from hub.broker.base import Envelope, InflightReply, Kind, Replies
from hub.core.assistant import AssistantRunner
from hub.settings import Settings


class Watchdog:
    """Renews this worker's reply leases and closes replies whose lease lapsed for good."""

    def __init__(self, settings: Settings, broker: Replies, runner: AssistantRunner) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self._seen: dict[str, tuple[str, float]] = {}
        self._lapsed: dict[str, float] = {}

    def note(self, channel: str, frame: Envelope) -> None:
        """A frame of a channel passed by: a delta keeps its reply watched, a done ends it."""
        if frame.kind is Kind.DELTA:
            self._seen[frame.reply] = (channel, time.monotonic())
            self._lapsed.pop(frame.reply, None)
        elif frame.kind is Kind.DONE and frame.reply:
            self._seen.pop(frame.reply, None)
            self._lapsed.pop(frame.reply, None)

    def watch(self, channel: str, state: InflightReply) -> None:
        """Watch a reply a resuming client was given: if its worker died, no delta will come."""
        lapsed = 0.0 if state.alive else self.settings.reply_lease
        self._seen.setdefault(state.reply, (channel, time.monotonic() - lapsed))

    def watched(self) -> set[str]:
        """Replies being watched now (for tests and metrics)."""
        return set(self._seen)

    async def tick(self) -> None:
        """Renew our leases; close replies that stayed quiet and unleased for a whole lease."""
        leases = self.runner.leases()
        if leases:
            await self.broker.reply_renew(leases, self.settings.reply_lease)
        now = time.monotonic()
        lease = self.settings.reply_lease
        for reply, (channel, seen) in list(self._seen.items()):
            if now - seen < lease:
                continue
            states = [s for s in await self.broker.inflight(channel) if s.reply == reply]
            if not states:  # finished
                self._forget(reply)
            elif states[0].alive:  # quiet but leased: look again, its worker may still die
                self._seen[reply] = (channel, now)
                self._lapsed.pop(reply, None)
            elif now - self._lapsed.setdefault(reply, now) >= lease:
                # Lapsed for a whole lease: its worker is gone. A lapse seen once may be Redis
                # back from an outage (leases ran out meanwhile) before the worker renewed.
                self._forget(reply)
                await self.runner.finish_orphan(channel, reply, states[0].deltas)

    def _forget(self, reply: str) -> None:
        self._seen.pop(reply, None)
        self._lapsed.pop(reply, None)
