"""Worker liveness: one heartbeat per worker, and a sweeper that takes over the replies of
workers whose heartbeat lapsed, whether or not anyone watches those replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from hub.broker.base import BrokerError, Replies
from hub.core.assistant import AssistantRunner
from hub.core.tasks import every, stop_if_cancelled
from hub.metrics import Metrics
from hub.settings import Settings

log = logging.getLogger(__name__)

SWEEP_BATCH = 16
"""Orphaned replies claimed at most per sweep: bounded work per tick."""

BEATS_PER_TTL = 3
"""Heartbeats per ``HUB_WORKER_TTL``: two may be lost before the worker counts as dead."""

SWEEPS_PER_TTL = 5
"""Sweeps per ``HUB_WORKER_TTL``: a dead worker's replies move within about 1.2 TTL."""


class Watchdog:
    """Beats this worker's heartbeat and sweeps for replies of dead workers."""

    def __init__(
        self,
        settings: Settings,
        broker: Replies,
        runner: AssistantRunner,
        worker: str,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.worker = worker
        self.metrics = metrics
        self._steady_since: float | None = None
        self._last_beat = 0.0
        self._rejoin_due = False
        self.on_dead: list[Callable[[str], Awaitable[None]]] = []
        """Called for each dead worker on every sweep until it is forgotten (must be idempotent)."""
        self.on_rejoin: list[Callable[[], Awaitable[None]]] = []
        """Called once this worker beats steadily again after a freeze or a broker outage,
        during which others may have taken it for dead and swept what it held."""

    async def run(self) -> None:
        """Beat and sweep until cancelled; a broker that is down only pauses both.

        Two loops: a sweep may take seconds (re-entering thousands of users after a freeze,
        sweeping a dead worker's big room), and the beats must not wait for it, or this
        worker is taken for dead in turn.
        """
        await asyncio.gather(self._beating(), self._sweeping())

    async def _beating(self) -> None:
        period = self.settings.worker_ttl / BEATS_PER_TTL
        while True:
            started = time.monotonic()
            await self.beat()
            stop_if_cancelled()
            await asyncio.sleep(max(0.0, started + period - time.monotonic()))

    async def _sweeping(self) -> None:
        period = self.settings.worker_ttl / SWEEPS_PER_TTL
        await every(period, self.sweep, "sweep", broker_log=logging.DEBUG)

    async def beat(self) -> None:
        """Renew this worker's heartbeat; note whether the beats have been steady."""
        now = time.monotonic()
        ttl = self.settings.worker_ttl
        try:
            gap = await self.broker.heartbeat(self.worker)
        except BrokerError as exc:
            log.debug("heartbeat failed: %s", exc)
            self._steady_since = None
            return
        if self._steady_since is None or now - self._last_beat > ttl / 2:
            self._steady_since = now  # first beat, or after a freeze (SIGSTOP, a stalled loop)
        if self._last_beat > 0 and gap > ttl:
            # Unheard for longer than a TTL (a freeze, an outage): others may have swept what
            # this worker held. A shorter stall (a busy loop) re-enters nobody.
            self._rejoin_due = True
        self._last_beat = now

    def steady(self) -> bool:
        """Whether this worker's own beats went through for a whole TTL: only then may it judge
        others dead. After a broker outage every heartbeat looks stale until each live worker
        beat again, which takes at most a third of a TTL."""
        since = self._steady_since
        return since is not None and time.monotonic() - since >= self.settings.worker_ttl

    async def sweep(self) -> int:
        """Claim up to ``SWEEP_BATCH`` replies of dead workers and continue (or close) them."""
        if not self.steady():
            return 0
        if self._rejoin_due:
            self._rejoin_due = False
            for rejoin in self.on_rejoin:
                await rejoin()
        if self.on_dead:
            for worker in await self.broker.dead_workers(self.worker, self.settings.worker_ttl):
                for sweep in self.on_dead:
                    await sweep(worker)
        orphans = await self.broker.orphans(self.worker, self.settings.worker_ttl, SWEEP_BATCH)
        claimed = 0
        for orphan in orphans:
            state = await self.broker.reply_claim(orphan, self.worker)
            if state is None:
                continue  # another worker was first, or the reply had ended
            claimed += 1
            self.metrics.orphans_swept.inc()
            log.info(
                "reply %s of %s (unheard since %d ms ago) taken over at seq %d",
                orphan.reply,
                orphan.worker,
                int(time.time() * 1000) - orphan.last_heard_ms,
                len(state.deltas),
            )
            if self.settings.takeover:
                self.metrics.taken_over.inc()
                self.runner.take_over(state, orphan.last_heard_ms)
            else:
                await self.runner.finish_orphan(state)
        return claimed

    async def hand_over(self) -> None:
        """This worker is shutting down: let the others take its replies over at once."""
        try:
            await self.broker.worker_gone(self.worker)
        except BrokerError as exc:
            log.warning("could not hand replies over: %s", exc)
