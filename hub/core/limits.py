"""Limits every worker shares through the broker: logins, connections, replies at once, a budget.

Reply slots are leases this worker renews in its upkeep, so the share of a worker that died
frees itself within a lease. Connection slots, thousands per worker, are listed as the worker's
instead and freed by whoever finds it dead: idle upkeep costs the same at any number of users. The daily token budget counts what
the providers report as used, per user and UTC day.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hub.broker.base import BrokerError, Quotas, RateLimits
from hub.core.access import take_or_refuse
from hub.core.assistant import ReplyListener
from hub.core.connection import Connection
from hub.core.tasks import Tasks, every
from hub.errors import FrameError
from hub.protocol import Done, Error, Usage, User
from hub.settings import Settings

log = logging.getLogger(__name__)

BUSY_RETRY = 5.0
"""Seconds a refused reply or connection is told to wait before trying again."""
DAY = 86400

_ids = itertools.count(1)


class LimitBroker(Quotas, RateLimits, Protocol):
    """The broker roles limits use."""


@dataclass(slots=True)
class Reservation:
    """The slots of one reply: taken before its question is stored, freed when it ends."""

    user: User
    slots: list[tuple[str, str]] = field(default_factory=list)
    reply: str | None = None
    id: int = field(default_factory=lambda: next(_ids))


def tokens_used(usage: Usage) -> int:
    """What counts against the daily budget: every token the provider billed."""
    return (
        usage.input_tokens
        + usage.output_tokens
        + usage.cache_read_input_tokens
        + usage.cache_creation_input_tokens
    )


def seconds_to_midnight(now: float | None = None) -> int:
    """Until the daily budget starts over (UTC)."""
    current = time.time() if now is None else now
    return DAY - int(current) % DAY


class Limiter:
    """This worker's side of the shared limits; the counts themselves live in the broker."""

    def __init__(self, settings: Settings, broker: LimitBroker, worker: str) -> None:
        self.settings = settings
        self.broker = broker
        self.holder = worker
        self.lease = max(settings.presence_ttl, settings.worker_ttl)
        self._connections: dict[int, list[tuple[str, str]]] = {}
        self._replies: dict[int, Reservation] = {}
        self._tasks = Tasks()

    async def guest_login(self, ip: str) -> None:
        """One more guest login from ``ip``; 429 past HUB_LOGIN_RATE / HUB_LOGIN_BURST."""
        s = self.settings
        await take_or_refuse(
            self.broker,
            f"login:{ip}",
            s.login_rate,
            s.login_burst,
            "Too many sign-ins from your address; wait {wait:.0f} s and try again.",
        )

    async def admit(self, conn: Connection) -> None:
        """Hold a connection slot of its user and of its address, or refuse it."""
        s = self.settings
        holder = f"{self.holder}|{conn.id}"
        wanted = [(f"conn:user:{conn.user.id}", s.max_connections_per_user, "you have")]
        if conn.peer:
            wanted.append((f"conn:ip:{conn.peer}", s.max_connections_per_ip, "your address has"))
        held: list[tuple[str, str]] = []
        self._connections[conn.id] = held
        for key, limit, who in wanted:
            if not await self.broker.slot_take(key, holder, limit, DAY, self.holder):
                raise FrameError(
                    "rate_limited",
                    f"Too many connections: {who} {limit} open already; close one first.",
                    retry_after=BUSY_RETRY,
                )
            held.append((key, holder))

    async def release(self, conn: Connection) -> None:
        """Give back a connection's slots (safe to call twice)."""
        for key, holder in self._connections.pop(conn.id, []):
            await self.broker.slot_release(key, holder, self.holder)

    async def sweep_worker(self, worker: str) -> None:
        """Free the connection slots of a dead worker (one sweeper frees each)."""
        freed = await self.broker.slots_sweep(worker)
        if freed:
            log.info("worker %s is gone; %d of its connection slots freed", worker, freed)

    async def retake(self) -> None:
        """Hold this worker's connection slots again after others may have swept them (a
        freeze): connections already open are never refused, so no limit applies."""
        for held in list(self._connections.values()):
            for key, holder in held:
                await self.broker.slot_take(key, holder, 1 << 30, DAY, self.holder)

    async def reserve_reply(self, user: User, channel: str, ref: str | None) -> Reservation:
        """Check the budget and hold reply slots (user, channel, worker), or refuse: busy."""
        s = self.settings
        if s.daily_tokens:
            used = await self.broker.counter_add(self._budget_key(user), 0, 2 * DAY)
            if used >= s.daily_tokens:
                wait = seconds_to_midnight()
                raise FrameError(
                    "quota_exceeded",
                    f"You have used today's assistant budget ({s.daily_tokens} tokens); "
                    f"it starts over in {wait // 3600} h {wait % 3600 // 60} min (UTC midnight).",
                    ref,
                    float(wait),
                )
        if len(self._replies) >= s.max_replies_per_worker:
            raise self._busy("this worker is answering as many questions as it can", ref)
        res = Reservation(user)
        holder = f"{self.holder}|{res.id}"
        self._replies[res.id] = res
        for key, limit, what in (
            (f"reply:user:{user.id}", s.max_replies_per_user, "your earlier questions"),
            (f"reply:chan:{channel}", s.max_replies_per_room, "questions in this channel"),
        ):
            if not await self.broker.slot_take(key, holder, limit, self.lease):
                await self.cancel(res)
                raise self._busy(f"the assistant is still answering {what}", ref)
            res.slots.append((key, holder))
        return res

    def _busy(self, why: str, ref: str | None) -> FrameError:
        return FrameError(
            "busy", f"Not now: {why}; try again in a moment.", ref, retry_after=BUSY_RETRY
        )

    def _budget_key(self, user: User) -> str:
        return f"tokens:{user.id}:{int(time.time()) // DAY}"

    async def cancel(self, res: Reservation) -> None:
        """Free a reservation's slots (its question was a duplicate, or its reply ended)."""
        if self._replies.pop(res.id, None) is None:
            return
        for key, holder in res.slots:
            await self.broker.slot_release(key, holder)

    def track(self, res: Reservation, listener: ReplyListener | None) -> ReplyListener:
        """A listener for the reply: passes items on, and at its end frees slots, counts usage.

        Set ``res.reply`` once the reply has its id, so upkeep can tell when it ended unseen.
        """

        def listen(item: str | Done | Error) -> None:
            if listener is not None:
                listener(item)
            if isinstance(item, Done):
                self._tasks.spawn(self._ended(res, item.usage), f"reply-end-{item.reply}")

        return listen

    async def _ended(self, res: Reservation, usage: Usage | None) -> None:
        await self.cancel(res)
        if usage is not None and self.settings.daily_tokens:
            await self.broker.counter_add(self._budget_key(res.user), tokens_used(usage), 2 * DAY)

    async def touch_guest(self, user: User) -> None:
        """Push back the moment a guest's data expires (HUB_GUEST_DATA_TTL after its last use)."""
        if user.guest:
            await self.broker.expire_user(user.id, self.settings.guest_data_ttl)

    async def renew(self, running: set[str]) -> None:
        """Upkeep: renew the leases of what is still held; free replies that ended unseen."""
        for res in [r for r in self._replies.values() if r.reply and r.reply not in running]:
            await self.cancel(res)
        slots = [s for res in self._replies.values() for s in res.slots]
        await self.broker.slot_renew(slots, self.lease)

    async def run(self, running: Callable[[], set[str]]) -> None:
        """Upkeep: ``renew`` every third of HUB_PRESENCE_TTL; ``running`` names the replies here."""
        await every(self.settings.presence_ttl / 3, lambda: self.renew(running()), "upkeep")

    async def close(self) -> None:
        """Cancel the usage-counting tasks still running."""
        await self._tasks.cancel_all()


async def release_quietly(limiter: Limiter, conn: Connection) -> None:
    """Release on close; a broker that is down lets the leases lapse instead."""
    try:
        await limiter.release(conn)
    except BrokerError as exc:
        log.info("connection slots of %s left to lapse: %s", conn.user.id, exc)
