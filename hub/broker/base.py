"""The broker contract: everything workers share, so that any worker can serve any client.

Two implementations pass one contract suite (tests/broker/test_contract.py):
``MemoryBroker`` (embedded, one process) and ``RedisBroker`` (pub/sub + Streams + Lua).

Vocabulary:
- *topic*: a pub/sub name. Hub channels (``dm:alice``, ``room:lobby``) are topics; so are
  ``user:<id>`` (membership changes for every connection of a user) and
  ``worker:<id>`` (commands for one worker, such as stopping a reply it runs).
- *entry*: a stored message of a channel's log: its id and its body, a JSON object
  string holding every field of the ``message`` frame except ``type`` and ``id``.
- *reply in flight*: an assistant reply being generated; its deltas so far are kept so a
  resuming client on any worker gets the part already streamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Kind(StrEnum):
    """What a published frame is, carried beside its bytes so nobody sniffs JSON to know."""

    MESSAGE = "m"
    """A stored message (``id`` set)."""
    DONE = "f"
    """The stored end of an assistant reply (``id`` and ``reply`` set)."""
    DELTA = "d"
    """A piece of a reply in flight (``reply`` and ``seq`` set)."""
    EVENT = "e"
    """Anything else clients receive as is (presence, errors)."""
    PRESENCE = "p"
    """A change of who is online in a room, for workers to coalesce into ``presence`` diffs."""
    COMMAND = "c"
    """For workers only (stop a reply, a user joined or left a room); never sent to clients."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A frame as it travels between workers: its kind, ids, and the JSON clients receive."""

    kind: Kind
    payload: str
    id: str = ""
    reply: str = ""
    seq: int = -1

    def pack(self) -> str:
        """One string for a pub/sub message: ``kind|id|reply|seq|payload``."""
        return f"{self.kind.value}|{self.id}|{self.reply}|{self.seq}|{self.payload}"

    @classmethod
    def unpack(cls, data: str) -> Envelope:
        """Read ``pack``'s form back; ValueError when it is not one."""
        kind, message_id, reply, seq, payload = data.split("|", 4)
        return cls(Kind(kind), payload, message_id, reply, int(seq))

    @property
    def stored(self) -> bool:
        """Whether the frame is a stored message of a channel log (it has an id)."""
        return self.kind is Kind.MESSAGE or self.kind is Kind.DONE


FrameHandler = Callable[[str, Envelope], None]
"""Called with (topic, envelope) for every frame published to a topic this worker subscribes."""

ReconnectHandler = Callable[[], Awaitable[None]]
"""Called after the broker lost its pub/sub link and subscribed again: frames may be missing.
Frames of the new link reach the FrameHandler only once it has returned, so it can catch up
from the last frame delivered before the gap without live frames overtaking it."""


class BrokerError(Exception):
    """The broker could not be reached or answered wrongly; the operation may be retried."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message of a channel log."""

    id: str
    body: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where ``append`` stored a message; ``duplicate`` when the dedupe key had been seen."""

    id: str
    duplicate: bool = False


@dataclass(slots=True)
class InflightReply:
    """A reply still streaming: its channel, the worker generating it, and its deltas so far."""

    reply: str
    channel: str
    worker: str
    meta: str
    deltas: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A reply in flight on a worker whose heartbeat lapsed, and when that worker was last heard."""

    channel: str
    reply: str
    worker: str
    last_heard_ms: int


class ReplyLost(Exception):
    """This worker no longer owns the reply (another took it over, or it ended): stop quietly."""


@dataclass(slots=True)
class Replay:
    """What a resuming client missed in one channel: entries after its id, then replies in flight."""

    entries: list[Entry]
    replies: list[InflightReply]


class PubSub(Protocol):
    """Fan-out between workers: each worker hears only the topics it subscribed."""

    async def start(self, on_frame: FrameHandler, on_reconnect: ReconnectHandler) -> None:
        """Connect and start delivering frames of subscribed topics to ``on_frame``."""
        ...

    async def close(self) -> None:
        """Stop every background task and release connections."""
        ...

    async def ping(self) -> bool:
        """True when the broker answers now (for /health)."""
        ...

    async def subscribe(self, topic: str) -> None:
        """Count one more local interest in ``topic``; subscribe for real on the first."""
        ...

    async def unsubscribe(self, topic: str) -> None:
        """Count one less local interest; unsubscribe for real after the last."""
        ...

    async def publish(self, topic: str, frame: Envelope) -> None:
        """Send a frame to every worker subscribed to ``topic``, this one included."""
        ...


class ChannelLog(Protocol):
    """Each channel's stored messages, published as they are stored."""

    async def append(
        self,
        channel: str,
        body: str,
        *,
        publish_as: str = "message",
        dedupe: str | None = None,
        dedupe_ttl: float = 86400.0,
        finish_reply: str | None = None,
        owner: str = "",
        start_reply: str | None = None,
    ) -> AppendResult | None:
        """Store ``body`` in the channel log and publish it as ``{"type":publish_as,"id":…}``.

        One atomic step: with ``dedupe`` already seen, nothing is stored or published and the
        first id comes back with ``duplicate=True``; with ``finish_reply``, the reply's in-flight
        state is dropped, and if it was already gone (or, with ``owner``, another worker owns
        it now) nothing happens and None comes back. With ``start_reply``, a reply to the stored
        message is in flight on ``owner`` from the same step (meta ``{"upto": id}``): a question
        stored by a worker that dies at once is still answered, by another worker.
        """
        ...

    async def history(
        self, channel: str, before: str | None, limit: int
    ) -> tuple[list[Entry], bool]:
        """The ``limit`` latest entries older than ``before`` (oldest first), and whether more exist."""
        ...

    async def replay(self, channel: str, after: str) -> Replay | None:
        """Every entry after ``after`` and the replies in flight, or None when that is impossible.

        None means the log no longer reaches back to ``after``: it was trimmed past it, or it was
        lost and started anew (an epoch is kept beside each log to tell), or the id is unknown.
        """
        ...


class Replies(Protocol):
    """Assistant replies in flight: who generates them, what they streamed so far, and which
    workers are alive (one heartbeat entry per worker), so any worker can take over the
    replies of a dead one."""

    async def reply_begin(self, channel: str, reply: str, worker: str, meta: str) -> None:
        """Record a reply as streaming on ``worker`` and index it under that worker."""
        ...

    async def reply_delta(
        self, channel: str, reply: str, worker: str, text: str, frame: Envelope
    ) -> None:
        """Keep delta ``frame.seq`` of a reply and publish its frame, in one step.

        A seq already kept (a retry after an answer that was lost) is neither kept nor
        published again. ``ReplyLost`` when ``worker`` no longer owns the reply.
        """
        ...

    async def reply_end(self, reply: str, channel: str, worker: str) -> None:
        """Drop an ended reply from its worker's index (its final message is stored)."""
        ...

    async def reply_owner(self, reply: str) -> tuple[str, str] | None:
        """(channel, worker) of a reply in flight, or None when it is not streaming."""
        ...

    async def inflight(self, channel: str) -> list[InflightReply]:
        """Replies in flight in a channel, with their deltas so far."""
        ...

    async def heartbeat(self, worker: str) -> float:
        """Say that ``worker`` lives now (its entry is stamped with the broker's clock); the
        seconds since its previous stamp (0 for the first), by which others judged it."""
        ...

    async def worker_gone(self, worker: str) -> None:
        """Mark ``worker`` dead at once (it is shutting down and hands its replies over)."""
        ...

    async def dead_workers(self, worker: str, ttl: float) -> list[str]:
        """Workers (other than ``worker``) unheard for ``ttl`` s and not forgotten yet."""
        ...

    async def orphans(self, worker: str, ttl: float, limit: int) -> list[Orphan]:
        """Up to ``limit`` replies of workers (other than ``worker``) unheard for ``ttl`` s."""
        ...

    async def reply_claim(self, orphan: Orphan, worker: str) -> InflightReply | None:
        """Make ``worker`` the owner of an orphan, atomically: its state, or None when another
        worker claimed it first or it ended (then it is only dropped from the dead index)."""
        ...


class Rooms(Protocol):
    """Who is a member of which room (membership belongs to the user, not a connection)."""

    async def room_join(self, room: str, user_id: str, name: str) -> bool:
        """Make a user a member of a room; False when it already was."""
        ...

    async def room_leave(self, room: str, user_id: str) -> bool:
        """End a user's membership; False when it was not a member."""
        ...

    async def room_size(self, room: str) -> int:
        """How many members a room has (0: the room does not exist); O(1) at any size."""
        ...

    async def user_rooms(self, user_id: str) -> list[str]:
        """Rooms a user is a member of, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class OnlinePage:
    """A page of who is online in a room, ordered by name then id, and how many are online."""

    members: list[tuple[str, str]]
    """(user id, display name) pairs."""
    more: bool
    online: int


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """Whether an enter or exit changed who is online (the user's first or last worker), and
    the room's online count after it."""

    changed: bool
    online: int


class Presence(Protocol):
    """Who is online in a room: a user is online while any worker holds a connection of theirs
    in it. There is no upkeep per user or room: workers' liveness is the heartbeat of
    ``Replies``, and a dead worker's users are swept once."""

    async def presence_enter(
        self, room: str, user_id: str, name: str, worker: str
    ) -> PresenceChange:
        """``worker`` holds a connection of the user in the room now."""
        ...

    async def presence_exit(self, room: str, user_id: str, worker: str) -> PresenceChange:
        """``worker`` holds no connection of the user in the room any more."""
        ...

    async def presence_page(self, room: str, after: str | None, limit: int) -> OnlinePage:
        """Up to ``limit`` online members after the member ``after`` (a user id), in order."""
        ...

    async def presence_sweep(self, worker: str) -> dict[str, tuple[list[str], int]]:
        """Take a dead worker's users out of every room it held: room → (users who went
        offline, online count after). Each room of a dead worker is swept by one caller only:
        a second call (here or on another worker) finds nothing."""
        ...


class RateLimits(Protocol):
    """Token buckets shared by every worker."""

    async def rate_take(self, key: str, rate: float, burst: int) -> float:
        """Take one token from a bucket; 0 when allowed, else seconds until one is available."""
        ...


class Tickets(Protocol):
    """One-slot values that expire and are read once (single-use SSE tickets)."""

    async def ticket_put(self, key: str, value: str, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        ...

    async def ticket_take(self, key: str) -> str | None:
        """The value under ``key``, removed in the same step; None when absent or expired."""
        ...


class Quotas(Protocol):
    """Shared counts behind the abuse limits: leased slots, expiring counters, marks."""

    async def slot_take(
        self, key: str, holder: str, limit: int, ttl: float, worker: str | None = None
    ) -> bool:
        """Hold one of ``limit`` slots of ``key`` for ``holder`` on a lease of ``ttl`` seconds.

        True when held (or already held by ``holder``); False when ``limit`` others hold one.
        Leases that were not renewed (their worker died) free their slot by themselves. With
        ``worker`` the slot is also listed as that worker's, for ``slots_sweep``: a worker
        holding thousands of slots then needs no renewals, and the lease is only a backstop.
        """
        ...

    async def slot_release(self, key: str, holder: str, worker: str | None = None) -> None:
        """Give a slot back (and take it off ``worker``'s list)."""
        ...

    async def slots_sweep(self, worker: str) -> int:
        """Free every slot listed as a dead ``worker``'s; exactly one caller frees each."""
        ...

    async def slot_renew(self, slots: list[tuple[str, str]], ttl: float) -> None:
        """Extend the leases of (key, holder) slots this worker still holds."""
        ...

    async def counter_add(self, key: str, amount: int, ttl: float) -> int:
        """Add to a counter that vanishes ``ttl`` seconds after it was created; the new total."""
        ...

    async def mark_set(self, key: str, value: str, ttl: float) -> None:
        """Keep a small value under ``key`` for ``ttl`` seconds (read by any worker)."""
        ...

    async def mark_get(self, key: str) -> str | None:
        """The value under ``key``, or None."""
        ...

    async def expire_user(self, user_id: str, ttl: float) -> None:
        """Let a user's own data (its dm's log, its room list) vanish ``ttl`` s from now.

        Calling it again pushes the moment back: guests' data outlives their last activity
        by ``ttl`` only.
        """
        ...


class Broker(PubSub, ChannelLog, Replies, Rooms, Presence, RateLimits, Tickets, Quotas, Protocol):
    """Everything workers share; see the module docstring for the vocabulary."""
