"""The embedded broker: all shared state in this process, for a hub that runs alone."""

from __future__ import annotations

import json
import time
from bisect import bisect_left, bisect_right, insort
from collections import defaultdict, deque
from dataclasses import dataclass, field

from hub.broker.base import (
    AppendResult,
    Entry,
    Envelope,
    FrameHandler,
    InflightReply,
    Kind,
    OnlinePage,
    Orphan,
    PresenceChange,
    ReconnectHandler,
    Replay,
    ReplyLost,
)
from hub.broker.presence_keys import member_of, sort_key
from hub.protocol import dm_channel, frame_from_entry, parse_id


class _Log:
    """A capped channel log with stream-style ids and the highest id trimmed away."""

    __slots__ = ("entries", "epoch", "trimmed")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.epoch: tuple[int, int] | None = None
        self.trimmed: tuple[int, int] = (0, 0)


@dataclass(slots=True)
class _Online:
    """Who is online in one room: sort keys in order, each user's key and workers."""

    order: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    workers: dict[str, set[str]] = field(default_factory=dict)


class MemoryBroker:
    """Implements ``Broker`` with dicts and deques; frames are delivered synchronously."""

    def __init__(self, history_max: int = 1000) -> None:
        self._history_max = history_max
        self._on_frame: FrameHandler | None = None
        self._subs: dict[str, int] = defaultdict(int)
        self._logs: dict[str, _Log] = defaultdict(_Log)
        self._last_id = (0, 0)
        self._dedupe: dict[tuple[str, str], tuple[str, float]] = {}
        self._inflight: dict[str, InflightReply] = {}
        self._workers: dict[str, float] = {}
        """Worker → when it was last heard (monotonic s); replies are indexed by ``worker``."""
        self._members: dict[str, dict[str, str]] = defaultdict(dict)
        self._rooms: dict[str, set[str]] = defaultdict(set)
        self._online: dict[str, _Online] = defaultdict(_Online)
        self._worker_rooms: dict[str, set[str]] = defaultdict(set)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._tickets: dict[str, tuple[str, float]] = {}
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)
        self._worker_slots: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._counters: dict[str, tuple[int, float]] = {}
        self._marks: dict[str, tuple[str, float]] = {}
        self._user_expiry: dict[str, float] = {}
        self._next_sweep = 0.0

    async def start(self, on_frame: FrameHandler, on_reconnect: ReconnectHandler) -> None:
        self._on_frame = on_frame

    async def close(self) -> None:
        self._on_frame = None

    async def ping(self) -> bool:
        return True

    async def subscribe(self, topic: str) -> None:
        self._subs[topic] += 1

    async def unsubscribe(self, topic: str) -> None:
        count = self._subs.get(topic, 0) - 1
        if count > 0:
            self._subs[topic] = count
        else:
            self._subs.pop(topic, None)

    def subscribed(self) -> dict[str, int]:
        """Local subscription counts, for tests and metrics."""
        return dict(self._subs)

    async def publish(self, topic: str, frame: Envelope) -> None:
        if self._on_frame is not None and topic in self._subs:
            self._on_frame(topic, frame)

    def _next_id(self) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

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
        now = time.monotonic()
        if dedupe is not None:
            seen = self._dedupe.get((channel, dedupe))
            if seen is not None and seen[1] > now:
                return AppendResult(seen[0], duplicate=True)
        if finish_reply is not None:
            state = self._inflight.get(finish_reply)
            if state is None or (owner and state.worker != owner):
                return None
            del self._inflight[finish_reply]
        log = self._logs[channel]
        message_id = self._next_id()
        if log.epoch is None:
            log.epoch = parse_id(message_id)
        log.entries.append(Entry(message_id, body))
        while len(log.entries) > self._history_max:
            log.trimmed = parse_id(log.entries.popleft().id)
        if start_reply:
            meta = json.dumps({"upto": message_id})
            self._inflight[start_reply] = InflightReply(start_reply, channel, owner, meta)
        if dedupe is not None:
            self._dedupe[(channel, dedupe)] = (message_id, now + dedupe_ttl)
            if len(self._dedupe) > 100_000:
                self._dedupe = {k: v for k, v in self._dedupe.items() if v[1] > now}
        kind = Kind.DONE if publish_as == "done" else Kind.MESSAGE
        payload = frame_from_entry(publish_as, message_id, body)
        await self.publish(channel, Envelope(kind, payload, message_id, finish_reply or ""))
        return AppendResult(message_id)

    async def history(
        self, channel: str, before: str | None, limit: int
    ) -> tuple[list[Entry], bool]:
        entries = list(self._logs[channel].entries) if channel in self._logs else []
        if before is not None:
            bound = parse_id(before)
            entries = [e for e in entries if parse_id(e.id) < bound]
        return entries[-limit:], len(entries) > limit

    async def replay(self, channel: str, after: str) -> Replay | None:
        log = self._logs.get(channel)
        if log is None or log.epoch is None or not log.entries:
            return None
        cursor = parse_id(after)
        if cursor < log.epoch or cursor < log.trimmed or cursor > parse_id(log.entries[-1].id):
            return None
        entries = [e for e in log.entries if parse_id(e.id) > cursor]
        return Replay(entries, await self.inflight(channel))

    async def reply_begin(self, channel: str, reply: str, worker: str, meta: str) -> None:
        self._inflight[reply] = InflightReply(reply, channel, worker, meta)

    async def reply_delta(
        self, channel: str, reply: str, worker: str, text: str, frame: Envelope
    ) -> None:
        state = self._inflight.get(reply)
        if state is None or state.worker != worker:
            raise ReplyLost(reply)
        if frame.seq < len(state.deltas):
            return
        state.deltas.append(text)
        await self.publish(channel, frame)

    async def reply_end(self, reply: str, channel: str, worker: str) -> None:
        return None

    async def reply_owner(self, reply: str) -> tuple[str, str] | None:
        state = self._inflight.get(reply)
        return None if state is None else (state.channel, state.worker)

    async def inflight(self, channel: str) -> list[InflightReply]:
        return [
            InflightReply(s.reply, channel, s.worker, s.meta, list(s.deltas))
            for s in self._inflight.values()
            if s.channel == channel
        ]

    async def heartbeat(self, worker: str) -> float:
        now = time.monotonic()
        previous = self._workers.get(worker)
        self._workers[worker] = now
        return 0.0 if previous is None else now - previous

    async def worker_gone(self, worker: str) -> None:
        self._workers[worker] = 0.0

    async def dead_workers(self, worker: str, ttl: float) -> list[str]:
        now = time.monotonic()
        return [w for w, heard in self._workers.items() if w != worker and now - heard > ttl]

    async def orphans(self, worker: str, ttl: float, limit: int) -> list[Orphan]:
        now = time.monotonic()
        out: list[Orphan] = []
        for state in self._inflight.values():
            heard = self._workers.get(state.worker, 0.0)
            if state.worker != worker and now - heard > ttl and len(out) < limit:
                last = int((time.time() - (now - heard)) * 1000) if heard else 0
                out.append(Orphan(state.channel, state.reply, state.worker, last))
        return out

    async def reply_claim(self, orphan: Orphan, worker: str) -> InflightReply | None:
        state = self._inflight.get(orphan.reply)
        if state is None or state.worker != orphan.worker:
            return None
        state.worker = worker
        return InflightReply(state.reply, state.channel, worker, state.meta, list(state.deltas))

    async def room_join(self, room: str, user_id: str, name: str) -> bool:
        fresh = user_id not in self._members[room]
        self._members[room][user_id] = name
        self._rooms[user_id].add(room)
        return fresh

    async def room_leave(self, room: str, user_id: str) -> bool:
        was = self._members[room].pop(user_id, None) is not None
        self._rooms[user_id].discard(room)
        return was

    async def room_size(self, room: str) -> int:
        return len(self._members.get(room, {}))

    async def user_rooms(self, user_id: str) -> list[str]:
        return sorted(self._rooms.get(user_id, ()))

    async def presence_enter(
        self, room: str, user_id: str, name: str, worker: str
    ) -> PresenceChange:
        online = self._online[room]
        self._worker_rooms[worker].add(room)
        workers = online.workers.setdefault(user_id, set())
        workers.add(worker)
        if len(workers) > 1:
            return PresenceChange(False, len(online.order))
        key = online.keys[user_id] = sort_key(user_id, name)
        insort(online.order, key)
        return PresenceChange(True, len(online.order))

    async def presence_exit(self, room: str, user_id: str, worker: str) -> PresenceChange:
        online = self._online[room]
        workers = online.workers.get(user_id)
        if not workers or worker not in workers:
            return PresenceChange(False, len(online.order))
        workers.discard(worker)
        if workers:
            return PresenceChange(False, len(online.order))
        del online.workers[user_id]
        key = online.keys[user_id]
        del online.order[bisect_left(online.order, key)]
        return PresenceChange(True, len(online.order))

    async def presence_page(self, room: str, after: str | None, limit: int) -> OnlinePage:
        online = self._online.get(room)
        if online is None:
            return OnlinePage([], False, 0)
        start = 0
        if after is not None and after in online.keys:
            start = bisect_right(online.order, online.keys[after])
        keys = online.order[start : start + limit + 1]
        members = [member_of(k) for k in keys[:limit]]
        return OnlinePage(members, len(keys) > limit, len(online.order))

    async def presence_sweep(self, worker: str) -> dict[str, tuple[list[str], int]]:
        swept: dict[str, tuple[list[str], int]] = {}
        for room in sorted(self._worker_rooms.pop(worker, set())):
            online = self._online[room]
            gone = [u for u, ws in online.workers.items() if worker in ws]
            left = []
            for user_id in gone:
                if (await self.presence_exit(room, user_id, worker)).changed:
                    left.append(user_id)
            swept[room] = (left, len(online.order))
        return swept

    async def rate_take(self, key: str, rate: float, burst: int) -> float:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    async def ticket_put(self, key: str, value: str, ttl: float) -> None:
        now = time.monotonic()
        for old in [k for k, (_v, until) in self._tickets.items() if until <= now]:
            del self._tickets[old]
        self._tickets[key] = (value, now + ttl)

    async def ticket_take(self, key: str) -> str | None:
        value, until = self._tickets.pop(key, ("", 0.0))
        return value if until > time.monotonic() else None

    # -- quotas ----------------------------------------------------------------------------
    async def slot_take(
        self, key: str, holder: str, limit: int, ttl: float, worker: str | None = None
    ) -> bool:
        now = time.monotonic()
        slots = self._slots[key]
        for old in [h for h, until in slots.items() if until <= now]:
            del slots[old]
        if holder not in slots and len(slots) >= limit:
            return False
        slots[holder] = now + ttl
        if worker is not None:
            self._worker_slots[worker].add((key, holder))
        return True

    async def slot_release(self, key: str, holder: str, worker: str | None = None) -> None:
        if worker is not None:
            self._worker_slots[worker].discard((key, holder))
        slots = self._slots.get(key)
        if slots is not None:
            slots.pop(holder, None)
            if not slots:
                del self._slots[key]

    async def slots_sweep(self, worker: str) -> int:
        held = self._worker_slots.pop(worker, set())
        for key, holder in held:
            await self.slot_release(key, holder)
        return len(held)

    async def slot_renew(self, slots: list[tuple[str, str]], ttl: float) -> None:
        until = time.monotonic() + ttl
        for key, holder in slots:
            held = self._slots.get(key)
            if held is not None and holder in held:
                held[holder] = until

    async def counter_add(self, key: str, amount: int, ttl: float) -> int:
        now = time.monotonic()
        total, until = self._counters.get(key, (0, now + ttl))
        if until <= now:
            total, until = 0, now + ttl
        self._counters[key] = (total + amount, until)
        return total + amount

    async def mark_set(self, key: str, value: str, ttl: float) -> None:
        self._marks[key] = (value, time.monotonic() + ttl)

    async def mark_get(self, key: str) -> str | None:
        value, until = self._marks.get(key, ("", 0.0))
        return value if until > time.monotonic() else None

    async def expire_user(self, user_id: str, ttl: float) -> None:
        now = time.monotonic()
        self._user_expiry[user_id] = now + ttl
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(ttl, 60.0)
        for gone in [u for u, until in self._user_expiry.items() if until <= now]:
            del self._user_expiry[gone]
            self._logs.pop(dm_channel(gone), None)
            self._rooms.pop(gone, None)
        for key in [k for k, (_v, until) in self._counters.items() if until <= now]:
            del self._counters[key]
        for key in [k for k, (_v, until) in self._marks.items() if until <= now]:
            del self._marks[key]
