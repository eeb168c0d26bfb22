"""Rooms: join and leave (membership belongs to the user), who is online, and member pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from hub.broker.base import ChannelLog, Entry, OnlinePage, PubSub, RateLimits, Rooms
from hub.core.access import check_join, take_or_refuse
from hub.core.connection import Connection
from hub.core.fanout import Fanout, release
from hub.core.fresh import SharedReads
from hub.core.presence import PresenceBroker, change
from hub.core.registry import Registry
from hub.core.resume import Cursor
from hub.core.topics import command, user_topic
from hub.errors import FrameError
from hub.protocol import (
    MEMBERS_PAGE,
    Join,
    Joined,
    Leave,
    Left,
    Member,
    Members,
    MembersRequest,
    User,
    channel_kind,
    encode,
    message_dict,
    parse_id,
    room_channel,
)
from hub.protocol import Presence as PresenceFrame
from hub.settings import Settings

log = logging.getLogger(__name__)

JOINED_HISTORY = 50
"""Latest messages a ``joined`` carries."""
JOINS_AT_ONCE = 16
"""Joins one worker runs at once (each is a few broker round trips)."""
JOIN_QUEUE_TIMEOUT = 60.0
"""Seconds a join may wait for its turn before it is answered ``busy``."""


class RoomBroker(PubSub, ChannelLog, Rooms, PresenceBroker, RateLimits, Protocol):
    """The broker roles rooms use."""


class RoomService:
    """Joins, leaves and presence of this worker's users; every shared fact is in the broker."""

    def __init__(
        self,
        settings: Settings,
        broker: RoomBroker,
        registry: Registry,
        fanout: Fanout,
        worker: str,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.fanout = fanout
        self.worker = worker
        self._joining = asyncio.Semaphore(JOINS_AT_ONCE)
        self._first_pages = SharedReads[str, OnlinePage](self._first_page)
        self._latest = SharedReads[str, list[Entry]](self._latest_entries)

    async def close(self) -> None:
        """Cancel the shared reads still running."""
        await self._first_pages.close()
        await self._latest.close()

    async def _first_page(self, room: str) -> OnlinePage:
        return await self.broker.presence_page(room, None, MEMBERS_PAGE)

    async def _latest_entries(self, channel: str) -> list[Entry]:
        return (await self.broker.history(channel, None, JOINED_HISTORY))[0]

    # -- client frames -------------------------------------------------------------------
    async def join(self, conn: Connection, frame: Join) -> None:
        """Make the user a member; this connection gets ``joined`` before any later frame is
        handled, the user's other connections (on any worker) follow through the user topic."""
        await self.join_user(conn.user, frame.room, frame.ref, conn)

    async def join_user(
        self, user: User, room: str, ref: str | None, conn: Connection | None = None
    ) -> None:
        """``join`` for a user with or without a connection (``POST /api/rooms/<room>/join``)."""
        await self._limit(user, ref)
        async with self._admitted(ref):
            await check_join(self.broker, self.settings, user, room, ref)
            await self.broker.room_join(room, user.id, user.name)
            if conn is not None:
                async with self.registry.lock(conn):
                    await self._sync_join(conn, room, ref)
            await self.broker.publish(user_topic(user.id), command("join", room=room, ref=ref))

    @contextlib.asynccontextmanager
    async def _admitted(self, ref: str | None) -> AsyncIterator[None]:
        """At most ``JOINS_AT_ONCE`` joins run here at once and the rest wait their turn: in a
        storm each join then finishes in milliseconds instead of all of them crawling together."""
        try:
            async with asyncio.timeout(JOIN_QUEUE_TIMEOUT):
                await self._joining.acquire()
        except TimeoutError:
            raise FrameError(
                "busy", "This worker has too many joins waiting; try again.", ref, 2.0
            ) from None
        try:
            yield
        finally:
            self._joining.release()

    async def leave(self, conn: Connection, frame: Leave) -> None:
        """End the user's membership; every connection of the user gets ``left``."""
        await self.leave_user(conn.user, frame.room, frame.ref)

    async def leave_user(self, user: User, room: str, ref: str | None) -> None:
        """``leave`` for a user with or without a connection."""
        await self._limit(user, ref)
        if not await self.broker.room_leave(room, user.id):
            raise FrameError("not_found", f"You are not in the room '{room}'.", ref)
        await self.broker.publish(user_topic(user.id), command("leave", room=room, ref=ref))

    async def members(self, conn: Connection, frame: MembersRequest) -> None:
        """A page of who is online in a room the connection is in."""
        if room_channel(frame.room) not in conn.channels:
            raise FrameError("forbidden", f"Join the room '{frame.room}' first.", frame.ref)
        page = await self.broker.presence_page(frame.room, frame.after, frame.limit)
        members = [Member(id=uid, name=name) for uid, name in page.members]
        reply = Members(
            room=frame.room, members=members, more=page.more, online=page.online, ref=frame.ref
        )
        conn.send_now(encode(reply))

    async def _limit(self, user: User, ref: str | None) -> None:
        await take_or_refuse(
            self.broker,
            f"room:{user.id}",
            self.settings.room_rate,
            self.settings.room_burst,
            "You are joining and leaving rooms too fast; wait {wait:.1f} s.",
            ref,
        )

    # -- the user's connections ----------------------------------------------------------
    async def on_user_command(self, user_id: str, event: dict[str, Any]) -> None:
        """Apply a join or leave of the user to each of its connections on this worker."""
        room, ref = str(event.get("room")), event.get("ref")
        channel = room_channel(room)
        for conn in list(self.registry.of_user(user_id)):
            async with self.registry.lock(conn):
                if event.get("op") == "join" and channel not in conn.channels:
                    await self._sync_join(conn, room, ref)
                elif event.get("op") == "leave" and channel in conn.channels:
                    await self.part(conn, channel)
                    conn.send_now(encode(Left(room=room, ref=ref)))

    async def _sync_join(self, conn: Connection, room: str, ref: str | None) -> None:
        """Put one connection of the user into the room and send it ``joined``."""
        channel = room_channel(room)
        conn.hold()
        await self.fanout.attach(conn, channel)
        await self.enter(conn.user, room)
        page = await self._first_pages.get(room)
        entries = await self._latest.get(channel)
        joined = Joined(
            room=room,
            online=page.online,
            members=[Member(id=uid, name=name) for uid, name in page.members],
            more=page.more,
            history=[message_dict(e.id, e.body) for e in entries],
            ref=ref,
        )
        conn.send_now(encode(joined))
        last = entries[-1].id if entries else "0-0"
        release(conn, {channel: Cursor(parse_id(last))})

    async def snapshot(self, room: str) -> str:
        """The first ``presence`` of a room for a connection: the count and the first page."""
        page = await self._first_pages.get(room)
        members = [Member(id=uid, name=name) for uid, name in page.members]
        frame = PresenceFrame(room=room, online=page.online, members=members, more=page.more)
        return encode(frame)

    async def enter(self, user: User, room: str) -> None:
        """A connection of the user is in the room here: the user is online (idempotent)."""
        channel = room_channel(room)
        result = await self.broker.presence_enter(room, user.id, user.name, self.worker)
        if result.changed:
            await self.broker.publish(channel, change(result.online, {user.id: user.name}, []))

    async def part(self, conn: Connection, channel: str) -> None:
        """Take a connection out of a channel; in a room, the user's last one here goes offline."""
        await self.fanout.detach(conn, channel)
        kind, room = channel_kind(channel)
        if kind != "room" or self.registry.user_in_channel(conn.user.id, channel):
            return
        result = await self.broker.presence_exit(room, conn.user.id, self.worker)
        if result.changed:
            await self.broker.publish(channel, change(result.online, {}, [conn.user.id]))

    # -- dead workers ------------------------------------------------------------------
    async def sweep_worker(self, worker: str) -> None:
        """Take a dead worker's users offline; every room hears the ``leaves`` (one sweeper)."""
        swept = await self.broker.presence_sweep(worker)
        if swept:
            log.info("worker %s is gone; its users swept from %d rooms", worker, len(swept))
        for room, (gone, online) in swept.items():
            if gone:
                await self.broker.publish(room_channel(room), change(online, {}, gone))

    async def enter_all(self) -> None:
        """Mark every local user online again (after others may have swept this worker)."""
        for channel in list(self.registry.by_channel):
            kind, room = channel_kind(channel)
            if kind != "room":
                continue
            users = {c.user.id: c.user for c in self.registry.in_channel(channel)}
            for user in users.values():
                await self.enter(user, room)
