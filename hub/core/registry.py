"""This worker's connections: user id → connections and channel → connections."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from hub.core.connection import Connection


class Registry:
    """Local indexes only; returns whether a channel gained its first or lost its last member."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[Connection]] = defaultdict(set)
        self.by_channel: dict[str, set[Connection]] = defaultdict(set)
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self, conn: Connection) -> asyncio.Lock:
        """The lock that keeps one connection's session and membership changes in order."""
        return self._locks.setdefault(conn.id, asyncio.Lock())

    def add_user(self, conn: Connection) -> bool:
        """Index a connection under its user; True for the user's first connection here."""
        conns = self.by_user[conn.user.id]
        conns.add(conn)
        return len(conns) == 1

    def remove_user(self, conn: Connection) -> bool:
        """Drop a connection from its user; True when that was the user's last one here."""
        self._locks.pop(conn.id, None)
        conns = self.by_user.get(conn.user.id)
        if conns is None:
            return False
        conns.discard(conn)
        if conns:
            return False
        del self.by_user[conn.user.id]
        return True

    def join(self, conn: Connection, channel: str) -> bool:
        """Add a connection to a channel; True when the channel is new on this worker."""
        conn.channels.add(channel)
        conns = self.by_channel[channel]
        conns.add(conn)
        return len(conns) == 1

    def part(self, conn: Connection, channel: str) -> bool:
        """Remove a connection from a channel; True when no connection here needs it any more."""
        conn.channels.discard(channel)
        conns = self.by_channel.get(channel)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        if conns:
            return False
        del self.by_channel[channel]
        return True

    def in_channel(self, channel: str) -> Iterable[Connection]:
        """Connections of a channel on this worker."""
        return self.by_channel.get(channel, ())

    def of_user(self, user_id: str) -> Iterable[Connection]:
        """Connections of a user on this worker."""
        return self.by_user.get(user_id, ())

    def user_in_channel(self, user_id: str, channel: str) -> bool:
        """Whether any local connection of the user is in the channel."""
        return any(channel in c.channels for c in self.by_user.get(user_id, ()))

    def all(self) -> list[Connection]:
        """Every connection on this worker."""
        return [c for conns in self.by_user.values() for c in conns]
