"""Sessions: a signed-in connection opens (channels, resume, greeting) and closes."""

from __future__ import annotations

import contextlib
from typing import Protocol

from hub.broker.base import BrokerError, ChannelLog, PubSub, Replay, Replies, Rooms
from hub.core.access import room_allowed
from hub.core.connection import Connection
from hub.core.fanout import Fanout, release
from hub.core.registry import Registry
from hub.core.resume import Cursor, inflight_frames, replay_frames
from hub.core.rooms import RoomService
from hub.core.topics import user_topic
from hub.metrics import Metrics
from hub.protocol import (
    Author,
    Limits,
    Message,
    User,
    Welcome,
    dm_channel,
    encode,
    entry_body,
    now_ms,
    parse_id,
    room_channel,
)
from hub.settings import Settings

SYSTEM = Author(id="system", name="Hub", role="system")
GREETING_TTL = 30 * 86400.0
"""Seconds the greeting's dedupe key lives (a dm never empties again once greeted)."""


class SessionBroker(PubSub, ChannelLog, Replies, Rooms, Protocol):
    """The broker roles sessions use."""


class Sessions:
    """Opens and closes this worker's sessions; a session is one connection of a user."""

    def __init__(
        self,
        settings: Settings,
        broker: SessionBroker,
        registry: Registry,
        fanout: Fanout,
        rooms: RoomService,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.fanout = fanout
        self.rooms = rooms
        self.metrics = metrics
        self.limits = Limits(
            max_frame=settings.max_frame,
            max_text=settings.max_text,
            history_max=settings.history_max,
            rate=settings.rate,
            rate_burst=settings.rate_burst,
        )

    async def open(self, conn: Connection, resume: dict[str, str] | None) -> None:
        """Welcome a signed-in connection: channels, resume or replies in flight, then live frames."""
        user = conn.user
        resume = resume or {}
        frames: list[str] = []
        async with self.registry.lock(conn):
            conn.hold()
            if self.registry.add_user(conn):
                await self.broker.subscribe(user_topic(user.id))
            rooms = [
                r
                for r in await self.broker.user_rooms(user.id)
                if room_allowed(user, r, self.settings)
            ]
            channels = [dm_channel(user.id), *(room_channel(r) for r in rooms)]
            for channel in channels:
                await self.fanout.attach(conn, channel)
            for room in rooms:
                await self.rooms.enter(user, room)
                frames.append(await self.rooms.snapshot(room))
            resumed: dict[str, bool] = {}
            cursors: dict[str, Cursor] = {}
            for channel, after in resume.items():
                replay = await self.broker.replay(channel, after) if channel in channels else None
                ok = replay is not None and self._resume(channel, after, replay, frames, cursors)
                resumed[channel] = ok
                self.metrics.resumes.labels("ok" if ok else "reload").inc()
            last_ids: dict[str, str] = {}
            for channel in channels:
                if not resumed.get(channel):
                    await self._catch_up(channel, frames, cursors, last_ids)
            if not resume and dm_channel(user.id) not in last_ids:
                await self._greet(user)  # an empty dm and no ids to resume: the first session
            welcome = Welcome(
                user=user,
                worker=self.settings.worker_id,
                channels=channels,
                limits=self.limits,
                resumed=resumed,
                last_ids=last_ids,
            )
            conn.send_now(encode(welcome))
            for frame in frames:
                conn.send_now(frame)
            release(conn, cursors)
            self.fanout.resumed(conn, cursors)

    def _resume(
        self,
        channel: str,
        after: str,
        replay: Replay,
        frames: list[str],
        cursors: dict[str, Cursor],
    ) -> bool:
        """Queue what a resuming client missed in a channel, unless it is too much to replay."""
        missed, cursor = replay_frames(channel, after, replay)
        if (
            len(missed) > self.settings.outbound_queue // 2
            or sum(map(len, missed)) > self.settings.outbound_bytes // 2
        ):
            return False
        frames.extend(missed)
        cursors[channel] = cursor
        return True

    async def _catch_up(
        self,
        channel: str,
        frames: list[str],
        cursors: dict[str, Cursor],
        last_ids: dict[str, str],
    ) -> None:
        """A channel the client starts afresh: its newest id, and replies in flight from seq 0."""
        latest, _more = await self.broker.history(channel, None, 1)
        cursor = Cursor((0, 0))
        if latest:
            last_ids[channel] = latest[-1].id
            cursor.last_id = parse_id(latest[-1].id)
        replies = await self.broker.inflight(channel)
        frames.extend(inflight_frames(channel, replies, cursor))
        cursors[channel] = cursor

    async def watch(self, conn: Connection, channel: str) -> None:
        """Follow one channel only, from its replies in flight on (no welcome, no presence).

        For a stream of one reply (htmx's chat bubble); the caller checked access.
        """
        async with self.registry.lock(conn):
            conn.hold()
            await self.fanout.attach(conn, channel)
            frames: list[str] = []
            cursors: dict[str, Cursor] = {}
            await self._catch_up(channel, frames, cursors, {})
            for frame in frames:
                conn.send_now(frame)
            release(conn, cursors)
            self.fanout.resumed(conn, cursors)

    async def unwatch(self, conn: Connection) -> None:
        """Stop following what ``watch`` followed."""
        self.fanout.forget(conn)
        for channel in list(conn.channels):
            await self.fanout.detach(conn, channel)
        self.registry.remove_user(conn)

    async def close(self, conn: Connection) -> None:
        """Forget a connection; presence ends when the user's last connection here goes."""
        self.fanout.forget(conn)
        try:
            for channel in list(conn.channels):
                await self.rooms.part(conn, channel)
        finally:
            if self.registry.remove_user(conn):
                with contextlib.suppress(BrokerError):
                    await self.broker.unsubscribe(user_topic(conn.user.id))

    async def _greet(self, user: User) -> None:
        """Speak first, once per user: on their first session ever (their dm is still empty).

        Called while the session holds its frames, before ``welcome``: no question of the
        user's can be stored ahead of it, so it never lands between a question and its answer.
        The dedupe key keeps two first tabs opened at once from greeting twice.
        """
        channel = dm_channel(user.id)
        text = (
            f"Hi {user.name}! Ask me anything here. To talk with other people, join a room; "
            "mention @assistant there when you want me to answer."
        )
        body = Message(channel=channel, id="0-0", author=SYSTEM, text=text, ts=now_ms())
        await self.broker.append(
            channel, entry_body(body), dedupe=f"greeting:{user.id}", dedupe_ttl=GREETING_TTL
        )
