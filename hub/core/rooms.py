"""Rooms: join and leave (membership belongs to the user), and who is online in each room."""

from __future__ import annotations

from typing import Any, Protocol

from hub.broker.base import ChannelLog, Envelope, Kind, Presence, PubSub, RateLimits, Rooms
from hub.core.access import check_join
from hub.core.connection import Connection
from hub.core.fanout import Fanout, release
from hub.core.registry import Registry
from hub.core.resume import Cursor
from hub.core.topics import command, user_topic
from hub.errors import FrameError
from hub.protocol import (
    Join,
    Joined,
    Leave,
    Left,
    Member,
    User,
    channel_kind,
    encode,
    message_dict,
    parse_id,
    room_channel,
)
from hub.protocol import (
    Presence as PresenceFrame,
)
from hub.settings import Settings


class RoomBroker(PubSub, ChannelLog, Rooms, Presence, RateLimits, Protocol):
    """The broker roles rooms use."""


class RoomService:
    """Joins, leaves and presence of this worker's users; every shared fact is in the broker."""

    def __init__(
        self, settings: Settings, broker: RoomBroker, registry: Registry, fanout: Fanout
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.fanout = fanout
        self.worker = settings.worker_id
        self._online: dict[str, frozenset[str]] = {}

    async def join(self, conn: Connection, frame: Join) -> None:
        """Make the user a member; every connection of the user gets ``joined`` (user topic)."""
        await self.join_user(conn.user, frame.room, frame.ref)

    async def join_user(self, user: User, room: str, ref: str | None) -> None:
        """``join`` for a user with or without a connection (``POST /api/rooms/<room>/join``)."""
        await check_join(self.broker, self.settings, user, room, ref)
        await self.broker.room_join(room, user.id, user.name)
        await self.broker.presence_touch(room, user.id, self.worker, self.settings.presence_ttl)
        await self.broker.publish(user_topic(user.id), command("join", room=room, ref=ref))
        await self.publish_presence(room)

    async def leave(self, conn: Connection, frame: Leave) -> None:
        """End the user's membership; every connection of the user gets ``left``."""
        await self.leave_user(conn.user, frame.room, frame.ref)

    async def leave_user(self, user: User, room: str, ref: str | None) -> None:
        """``leave`` for a user with or without a connection."""
        if not await self.broker.room_leave(room, user.id):
            raise FrameError("not_found", f"You are not in the room '{room}'.", ref)
        await self.broker.presence_drop(room, user.id, None)
        await self.broker.publish(user_topic(user.id), command("leave", room=room, ref=ref))
        await self.publish_presence(room)

    async def on_user_command(self, user_id: str, event: dict[str, Any]) -> None:
        """Apply a join or leave of the user to each of its connections on this worker."""
        room, ref = str(event.get("room")), event.get("ref")
        channel = room_channel(room)
        for conn in list(self.registry.of_user(user_id)):
            async with self.registry.lock(conn):
                if event.get("op") == "join":
                    await self._sync_join(conn, room, ref)
                elif event.get("op") == "leave":
                    await self.fanout.detach(conn, channel)
                    conn.send_now(encode(Left(room=room, ref=ref)))

    async def _sync_join(self, conn: Connection, room: str, ref: str | None) -> None:
        """Put one connection of the joining user into the room and send it ``joined``."""
        channel = room_channel(room)
        conn.hold()
        await self.fanout.attach(conn, channel)
        await self.broker.presence_touch(
            room, conn.user.id, self.worker, self.settings.presence_ttl
        )
        entries, _more = await self.broker.history(channel, None, 50)
        members = await self._online_members(room)
        history = [message_dict(e.id, e.body) for e in entries]
        conn.send_now(encode(Joined(room=room, members=members, history=history, ref=ref)))
        last = entries[-1].id if entries else "0-0"
        release(conn, {channel: Cursor(parse_id(last))})

    async def user_online(self, user_id: str, rooms: list[str]) -> None:
        """A session of the user opened here: it is online in each of its rooms."""
        for room in rooms:
            await self.broker.presence_touch(room, user_id, self.worker, self.settings.presence_ttl)
            await self.publish_presence(room)

    async def user_offline(self, user_id: str) -> None:
        """The user's last connection here went: not online through this worker any more."""
        for room in await self.broker.user_rooms(user_id):
            await self.broker.presence_drop(room, user_id, self.worker)
            await self.publish_presence(room)

    async def _online_members(self, room: str) -> list[Member]:
        members = await self.broker.room_members(room)
        online = await self.broker.presence_online(room)
        self._online[room] = frozenset(online & members.keys())
        return sorted(
            (Member(id=uid, name=members[uid]) for uid in self._online[room]),
            key=lambda m: (m.name.lower(), m.id),
        )

    async def publish_presence(self, room: str) -> None:
        """Tell every member who is online now."""
        members = await self._online_members(room)
        frame = Envelope(Kind.EVENT, encode(PresenceFrame(room=room, members=members)))
        await self.broker.publish(room_channel(room), frame)

    async def tick(self) -> None:
        """Renew this worker's presence leases; tell local members about presence that faded."""
        ttl = self.settings.presence_ttl
        for channel in list(self.registry.by_channel):
            kind, room = channel_kind(channel)
            if kind != "room":
                continue
            for user_id in {c.user.id for c in self.registry.in_channel(channel)}:
                await self.broker.presence_touch(room, user_id, self.worker, ttl)
            before = self._online.get(room)
            members = await self._online_members(room)
            if before is not None and before != self._online[room]:
                payload = encode(PresenceFrame(room=room, members=members))
                for conn in self.registry.in_channel(channel):
                    conn.deliver(channel, payload)
