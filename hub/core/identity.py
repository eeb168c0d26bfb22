"""Sessions end with their token: at its expiry, or when the user's tokens are revoked.

Revocation is a per-user mark in the broker ("tokens issued up to this second are void"),
checked when a session opens and on HTTP requests, and a command on the user's topic that
closes the user's open connections on every worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from hub.broker.base import PubSub, Quotas
from hub.core.connection import Connection
from hub.core.topics import command, user_topic
from hub.errors import CloseCode, FrameError
from hub.protocol import Error, User, encode

EXPIRED = "Your token has expired; sign in again to get a new one."
REVOKED = "Your sign-in was revoked; sign in again."


class IdentityBroker(PubSub, Quotas, Protocol):
    """The broker roles revocation uses."""


def _mark(user_id: str) -> str:
    return f"revoked:{user_id}"


async def revoke_user(broker: IdentityBroker, user_id: str, max_ttl: float) -> int:
    """Void every token of ``user_id`` issued until now, on every worker; returns that time."""
    now = int(time.time())
    await broker.mark_set(_mark(user_id), str(now), max_ttl + 60)
    await broker.publish(user_topic(user_id), command("revoke", before=now))
    return now


def end_session(conn: Connection, message: str) -> None:
    """Tell the connection why, then close it 4001 (SSE: an ``event: close`` with 4001)."""
    conn.send_now(encode(Error(code="unauthorized", message=message)))
    conn.close(CloseCode.UNAUTHORIZED, "token expired or revoked")


class TokenWatch:
    """Closes this worker's connections when their token expires or is revoked."""

    def __init__(self, broker: IdentityBroker) -> None:
        self.broker = broker
        self._timers: dict[int, asyncio.TimerHandle] = {}

    async def check(self, user: User) -> None:
        """Refuse a user whose tokens were revoked after this one was issued."""
        mark = await self.broker.mark_get(_mark(user.id))
        if mark is not None and user.issued <= int(mark):
            raise FrameError("unauthorized", REVOKED)

    def watch(self, conn: Connection) -> None:
        """Close the connection 4001 when its token expires."""
        if not conn.user.expires:
            return
        delay = max(0.0, conn.user.expires - time.time())
        loop = asyncio.get_running_loop()
        self._timers[conn.id] = loop.call_later(delay, self._expired, conn)

    def unwatch(self, conn: Connection) -> None:
        """The connection closed: forget its timer."""
        timer = self._timers.pop(conn.id, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, conn: Connection) -> None:
        self._timers.pop(conn.id, None)
        end_session(conn, EXPIRED)

    def on_revoke(self, conns: list[Connection], fields: dict[str, Any]) -> None:
        """A ``revoke`` command of the user's topic: end the sessions of tokens it voids."""
        before = fields.get("before")
        if not isinstance(before, int):
            return
        for conn in conns:
            if conn.user.issued <= before:
                end_session(conn, REVOKED)
