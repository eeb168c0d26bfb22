"""Presence diffs: changes of who is online, gathered per room, sent about once a second.

A join storm of N users costs each member O(N) bytes in all (a few diffs a second), not a
whole member list per join; a user flapping in and out within one window costs one entry.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Protocol

from hub.broker.base import Envelope, Kind, Presence
from hub.core.registry import Registry
from hub.core.tasks import every
from hub.protocol import Member, channel_kind, encode, room_channel
from hub.protocol import Presence as PresenceFrame

FLUSH_SLICE = 200
"""Members a flush writes to before it lets the event loop run: a diff of a join storm to
thousands of members here is hundreds of MB, and the heartbeat must not wait for all of it."""


def change(online: int, joins: dict[str, str], leaves: list[str]) -> Envelope:
    """A presence change as workers publish it to the room's channel."""
    payload = json.dumps({"online": online, "joins": list(joins.items()), "leaves": leaves})
    return Envelope(Kind.PRESENCE, payload)


@dataclass(slots=True)
class _Pending:
    joins: dict[str, str] = field(default_factory=dict)
    leaves: set[str] = field(default_factory=set)


class PresenceBroker(Presence, Protocol):
    """The broker role the diffs read the online count from."""


class PresenceDiffs:
    """Coalesces presence changes heard from the broker into one diff per room per flush."""

    def __init__(self, broker: PresenceBroker, registry: Registry) -> None:
        self.broker = broker
        self.registry = registry
        self._pending: dict[str, _Pending] = {}

    def add(self, channel: str, frame: Envelope) -> None:
        """Gather a change; the last word on each user wins (joins and leaves stay disjoint)."""
        try:
            data = json.loads(frame.payload)
            joins = [(str(uid), str(name)) for uid, name in data.get("joins", [])]
            leaves = [str(uid) for uid in data.get("leaves", [])]
        except (ValueError, TypeError, AttributeError):
            return
        _kind, room = channel_kind(channel)
        pending = self._pending.setdefault(room, _Pending())
        for user_id, name in joins:
            pending.leaves.discard(user_id)
            pending.joins[user_id] = name
        for user_id in leaves:
            pending.joins.pop(user_id, None)
            pending.leaves.add(user_id)

    def pending_rooms(self) -> int:
        """Rooms with changes not sent yet (for tests and metrics)."""
        return len(self._pending)

    async def flush(self) -> int:
        """Send each room's gathered changes to its members here; returns frames delivered."""
        pending, self._pending = self._pending, {}
        delivered = 0
        for room, changes in pending.items():
            channel = room_channel(room)
            conns = list(self.registry.in_channel(channel))
            if not conns:
                continue
            online = (await self.broker.presence_page(room, None, 0)).online
            frame = PresenceFrame(
                room=room,
                online=online,
                joins=[Member(id=uid, name=name) for uid, name in changes.joins.items()],
                leaves=sorted(changes.leaves),
            )
            envelope = Envelope(Kind.PRESENCE, encode(frame))
            for n, conn in enumerate(conns, 1):
                conn.deliver(channel, envelope)
                if n % FLUSH_SLICE == 0:
                    await asyncio.sleep(0)
            delivered += len(conns)
        return delivered

    async def run(self, interval: float) -> None:
        """Send each room's gathered changes about once per ``interval`` (HUB_PRESENCE_INTERVAL)."""
        await every(interval, self.flush, "presence diffs", wait_first=True)
