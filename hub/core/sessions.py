"""Sessions: a signed-in connection opens (channels, resume, greeting) and closes."""

from __future__ import annotations

import contextlib
import json
from typing import Protocol

from hub.broker.base import BrokerError, ChannelLog, PubSub, Rooms
from hub.core.connection import Connection
from hub.core.fanout import Fanout, release
from hub.core.registry import Registry
from hub.core.resume import Cursor, replay_frames
from hub.core.rooms import RoomService
from hub.core.topics import user_topic
from hub.core.watchdog import Watchdog
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
    room_channel,
)
from hub.settings import Settings

SYSTEM = Author(id="system", name="Hub", role="system")


class SessionBroker(PubSub, ChannelLog, Rooms, Protocol):
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
        watchdog: Watchdog,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.fanout = fanout
        self.rooms = rooms
        self.watchdog = watchdog
        self.metrics = metrics
        self.limits = Limits(
            max_frame=settings.max_frame,
            max_text=settings.max_text,
            history_max=settings.history_max,
            rate=settings.rate,
            rate_burst=settings.rate_burst,
        )

    async def open(self, conn: Connection, resume: dict[str, str] | None) -> None:
        """Welcome a signed-in connection: channels, resume, then live frames, then a greeting."""
        user = conn.user
        async with self.registry.lock(conn):
            conn.hold()
            if self.registry.add_user(conn):
                await self.broker.subscribe(user_topic(user.id))
            rooms = await self.broker.user_rooms(user.id)
            channels = [dm_channel(user.id), *(room_channel(r) for r in rooms)]
            for channel in channels:
                await self.fanout.attach(conn, channel)
            resumed: dict[str, bool] = {}
            replayed: list[str] = []
            cursors: dict[str, Cursor] = {}
            for channel, after in (resume or {}).items():
                replay = await self.broker.replay(channel, after) if channel in channels else None
                frames: list[str] = []
                if replay is not None:
                    frames, cursors[channel] = replay_frames(channel, after, replay)
                    for state in replay.replies:
                        self.watchdog.watch(channel, state)
                ok = replay is not None and len(frames) <= self.settings.outbound_queue // 2
                resumed[channel] = ok
                self.metrics.resumes.labels("ok" if ok else "reload").inc()
                if ok:
                    replayed.extend(frames)
            welcome = Welcome(
                user=user,
                worker=self.settings.worker_id,
                channels=channels,
                limits=self.limits,
                resumed=resumed,
            )
            conn.send_now(encode(welcome))
            for frame in replayed:
                conn.send_now(frame)
            release(conn, cursors)
            self.fanout.resumed(conn, cursors)
        await self.rooms.user_online(user.id, rooms)
        if not resume:
            await self._greet(user)

    async def close(self, conn: Connection) -> None:
        """Forget a connection; presence ends when the user's last connection here goes."""
        self.fanout.forget(conn)
        for channel in list(conn.channels):
            await self.fanout.detach(conn, channel)
        if not self.registry.remove_user(conn):
            return
        with contextlib.suppress(BrokerError):
            await self.broker.unsubscribe(user_topic(conn.user.id))
            await self.rooms.user_offline(conn.user.id)

    async def _greet(self, user: User) -> None:
        """Speak first on a fresh session, unless the last thing said in the dm was a greeting."""
        channel = dm_channel(user.id)
        latest, _more = await self.broker.history(channel, None, 1)
        if latest and json.loads(latest[-1].body).get("author", {}).get("id") == SYSTEM.id:
            return
        text = (
            f"Hi {user.name}! Ask me anything here. To talk with other people, join a room; "
            "mention @assistant there when you want me to answer."
        )
        body = Message(channel=channel, id="0-0", author=SYSTEM, text=text, ts=now_ms())
        await self.broker.append(channel, entry_body(body))
