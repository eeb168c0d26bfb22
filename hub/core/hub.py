"""The hub service: sessions, the frame dispatch table, fan-out, rooms, presence and resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from hub.broker.base import AppendResult, Broker, BrokerError, Replay
from hub.core.assistant import AssistantRunner, ReplyListener
from hub.core.connection import Connection
from hub.core.registry import Registry
from hub.core.resume import Cursor, replay_frames
from hub.llm.base import LLM
from hub.metrics import Metrics
from hub.protocol import (
    CLOSE_RESTARTING,
    Ack,
    Author,
    ClientFrame,
    Error,
    FrameError,
    History,
    HistoryRequest,
    Join,
    Joined,
    Leave,
    Left,
    Limits,
    Member,
    Message,
    Ping,
    Pong,
    Presence,
    Send,
    Stop,
    User,
    Welcome,
    channel_kind,
    dm_channel,
    encode,
    entry_body,
    frame_from_entry,
    now_ms,
    parse_id,
    room_channel,
    stored_id,
)
from hub.settings import Settings

log = logging.getLogger(__name__)

MENTION_RE = re.compile(r"(?<![\w@])@assistant\b", re.IGNORECASE)
SYSTEM = Author(id="system", name="Hub", role="system")
UNAVAILABLE = "The hub cannot reach its message store right now; try again in a moment."


def _user_topic(user_id: str) -> str:
    return f"user:{user_id}"


def _worker_topic(worker: str) -> str:
    return f"worker:{worker}"


def message_dict(entry_id: str, body: str) -> dict[str, Any]:
    """A stored entry as the ``message`` frame object clients receive."""
    data: dict[str, Any] = json.loads(frame_from_entry("message", entry_id, body))
    return data


class Hub:
    """One worker's share of the hub; every shared fact lives in the broker."""

    def __init__(self, settings: Settings, broker: Broker, llm: LLM, metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.llm = llm
        self.metrics = metrics
        self.worker = settings.worker_id
        self.registry = Registry()
        self.runner = AssistantRunner(settings, broker, llm, self.worker, metrics)
        self.draining = False
        self.limits = Limits(
            max_frame=settings.max_frame,
            max_text=settings.max_text,
            history_max=settings.history_max,
            rate=settings.rate,
            rate_burst=settings.rate_burst,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribing: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._last_ids: dict[str, str] = {}
        self._reply_seen: dict[str, tuple[str, float]] = {}
        self._reply_lapsed: dict[str, float] = {}
        self._online: dict[str, frozenset[str]] = {}
        self._handlers: dict[type[Any], Callable[[Connection, Any], Awaitable[None]]] = {
            Join: self._on_join,
            Leave: self._on_leave,
            Send: self._on_send,
            Stop: self._on_stop,
            HistoryRequest: self._on_history,
            Ping: self._on_ping,
        }

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the broker, listen for this worker's commands, start the upkeep loop."""
        await self.broker.start(self._on_frame, self._on_reconnect)
        await self.broker.subscribe(_worker_topic(self.worker))
        self._spawn(self._upkeep(), "upkeep")

    async def drain(self) -> None:
        """Stop taking work, let replies finish (bounded), send every client elsewhere (1012)."""
        self.draining = True
        await self.runner.wait_idle(self.settings.drain_timeout / 2)
        conns = self.registry.all()
        for conn in conns:
            conn.close(CLOSE_RESTARTING, "worker restarting; reconnect and resume")
        await asyncio.gather(
            *(c.wait_closed(self.settings.drain_timeout / 4) for c in conns),
            return_exceptions=True,
        )

    async def close(self) -> None:
        """Cancel every task this hub started and close the broker."""
        self.draining = True
        await self.runner.shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.llm.aclose()
        await self.broker.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def _lock(self, conn: Connection) -> asyncio.Lock:
        return self._locks.setdefault(conn.id, asyncio.Lock())

    # -- sessions ------------------------------------------------------------------------
    async def open_session(self, conn: Connection, resume: dict[str, str] | None) -> None:
        """Welcome a signed-in connection: channels, resume, then live frames, then a greeting."""
        user = conn.user
        async with self._lock(conn):
            conn.hold()
            if self.registry.add_user(conn):
                await self.broker.subscribe(_user_topic(user.id))
            rooms = await self.broker.user_rooms(user.id)
            channels = [dm_channel(user.id), *(room_channel(r) for r in rooms)]
            for channel in channels:
                await self._attach(conn, channel)
            resumed: dict[str, bool] = {}
            replayed: list[str] = []
            cursors: dict[str, Cursor] = {}
            for channel, after in (resume or {}).items():
                replay = await self.broker.replay(channel, after) if channel in channels else None
                frames: list[str] = []
                if replay is not None:
                    frames, cursors[channel] = replay_frames(channel, after, replay)
                    for state in replay.replies:
                        # Watched by upkeep from here as well: if its worker died, no delta
                        # will ever reach this worker. A lapsed lease is looked at next round.
                        lapsed = 0.0 if state.alive else self.settings.reply_lease
                        self._reply_seen.setdefault(
                            state.reply, (channel, time.monotonic() - lapsed)
                        )
                ok = replay is not None and len(frames) <= self.settings.outbound_queue // 2
                resumed[channel] = ok
                self.metrics.resumes.labels("ok" if ok else "reload").inc()
                if ok:
                    replayed.extend(frames)
            welcome = Welcome(
                user=user,
                worker=self.worker,
                channels=channels,
                limits=self.limits,
                resumed=resumed,
            )
            conn.send_now(encode(welcome))
            for frame in replayed:
                conn.send_now(frame)
            self._release(conn, cursors)
        for room in rooms:
            await self.broker.presence_touch(room, user.id, self.worker, self.settings.presence_ttl)
            await self._publish_presence(room)
        if not resume:
            await self._greet(user)

    async def close_session(self, conn: Connection) -> None:
        """Forget a connection; presence ends when the user's last connection here goes."""
        self._locks.pop(conn.id, None)
        user = conn.user
        for channel in list(conn.channels):
            await self._detach(conn, channel)
        if not self.registry.remove_user(conn):
            return
        with contextlib.suppress(BrokerError):
            await self.broker.unsubscribe(_user_topic(user.id))
            for room in await self.broker.user_rooms(user.id):
                await self.broker.presence_drop(room, user.id, self.worker)
                await self._publish_presence(room)

    def _release(self, conn: Connection, cursors: dict[str, Cursor]) -> None:
        for channel, payload in conn.release():
            cursor = cursors.get(channel)
            if cursor is None or cursor.admits(payload):
                conn.send_now(payload)

    async def _attach(self, conn: Connection, channel: str) -> None:
        if self.registry.join(conn, channel):
            task = asyncio.ensure_future(self.broker.subscribe(channel))
            self._subscribing[channel] = task
            try:
                await task
                if channel not in self._last_ids:
                    # The point to replay from if the broker blinks before this channel speaks.
                    latest, _more = await self.broker.history(channel, None, 1)
                    self._last_ids[channel] = latest[-1].id if latest else "0-0"
            finally:
                self._subscribing.pop(channel, None)
            self.metrics.subscriptions.inc()
        elif channel in self._subscribing:
            await asyncio.shield(self._subscribing[channel])

    async def _detach(self, conn: Connection, channel: str) -> None:
        if self.registry.part(conn, channel):
            self._last_ids.pop(channel, None)
            self.metrics.subscriptions.dec()
            with contextlib.suppress(BrokerError):
                await self.broker.unsubscribe(channel)

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

    # -- client frames -------------------------------------------------------------------
    async def handle(self, conn: Connection, frame: ClientFrame) -> None:
        """Dispatch one parsed frame through the table; errors go back as ``error`` frames."""
        self.metrics.frames_in.labels(frame.type).inc()
        handler = self._handlers.get(type(frame))
        try:
            if handler is None:
                raise FrameError("invalid", "Send 'hello' only once, as the first frame.")
            await handler(conn, frame)
        except FrameError as exc:
            self.send_error(conn, exc.code, exc.message, exc.ref or frame.ref, exc.retry_after)
        except BrokerError as exc:
            log.warning("broker error for %s: %s", frame.type, exc)
            self.send_error(conn, "unavailable", UNAVAILABLE, frame.ref, 1.0)

    def send_error(
        self,
        conn: Connection,
        code: Any,
        message: str,
        ref: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer one connection with an ``error`` frame."""
        self.metrics.errors.labels(code).inc()
        conn.send_now(encode(Error(code=code, message=message, ref=ref, retry_after=retry_after)))

    async def _on_ping(self, conn: Connection, frame: Ping) -> None:
        conn.send_now(encode(Pong(ref=frame.ref)))

    async def _on_send(self, conn: Connection, frame: Send) -> None:
        channel = frame.channel or dm_channel(conn.user.id)
        result, _reply = await self.post(conn.user, channel, frame.text, frame.ref, conn=conn)
        conn.send_now(encode(Ack(ref=frame.ref, id=result.id)))

    async def post(
        self,
        user: User,
        channel: str,
        text: str,
        ref: str | None,
        *,
        conn: Connection | None = None,
        ask: bool | None = None,
        listener: ReplyListener | None = None,
    ) -> tuple[AppendResult, str | None]:
        """Store a user's message and start the assistant when it is addressed (or ``ask``)."""
        if self.draining:
            raise FrameError("unavailable", "This worker is restarting; reconnect.", ref, 1.0)
        await self.check_access(user, channel, conn)
        if len(text) > self.settings.max_text:
            raise FrameError(
                "too_long",
                f"Messages may be at most {self.settings.max_text} characters; "
                f"this one has {len(text)}.",
                ref,
            )
        if not text.strip():
            raise FrameError("invalid", "The message is empty.", ref)
        wait = await self.broker.rate_take(
            f"send:{user.id}", self.settings.rate, self.settings.rate_burst
        )
        if wait > 0:
            raise FrameError(
                "rate_limited",
                f"You are sending too fast; wait {wait:.1f} s and try again.",
                ref,
                round(wait, 2),
            )
        body = Message(
            channel=channel,
            id="0-0",
            author=Author(id=user.id, name=user.name, role="user"),
            text=text,
            ts=now_ms(),
            ref=ref,
        )
        dedupe = f"{user.id}:{ref}" if ref else None
        result = await self.broker.append(channel, entry_body(body), dedupe=dedupe)
        assert result is not None
        if result.duplicate:
            return result, None
        self.metrics.messages.inc()
        kind, _name = channel_kind(channel)
        wanted = ask if ask is not None else kind == "dm" or bool(MENTION_RE.search(text))
        reply = self.runner.start(channel, listener=listener) if wanted else None
        return result, reply

    async def check_access(self, user: User, channel: str, conn: Connection | None) -> None:
        """A dm is its owner's alone; a room is open to its members (join first)."""
        kind, name = channel_kind(channel)
        if kind == "dm":
            if name != user.id:
                raise FrameError("forbidden", "That is another user's private channel.")
            return
        if conn is not None and channel in conn.channels:
            return
        if name not in await self.broker.user_rooms(user.id):
            raise FrameError("forbidden", f"Join the room '{name}' first.")

    async def _on_join(self, conn: Connection, frame: Join) -> None:
        user = conn.user
        await self.broker.room_join(frame.room, user.id, user.name)
        await self.broker.presence_touch(
            frame.room, user.id, self.worker, self.settings.presence_ttl
        )
        event = json.dumps({"op": "join", "room": frame.room, "ref": frame.ref})
        await self.broker.publish(_user_topic(user.id), event)
        await self._publish_presence(frame.room)

    async def _on_leave(self, conn: Connection, frame: Leave) -> None:
        user = conn.user
        if not await self.broker.room_leave(frame.room, user.id):
            raise FrameError("not_found", f"You are not in the room '{frame.room}'.")
        await self.broker.presence_drop(frame.room, user.id, None)
        event = json.dumps({"op": "leave", "room": frame.room, "ref": frame.ref})
        await self.broker.publish(_user_topic(user.id), event)
        await self._publish_presence(frame.room)

    async def _on_history(self, conn: Connection, frame: HistoryRequest) -> None:
        messages, more = await self.history(
            conn.user, frame.channel, frame.before, frame.limit, conn
        )
        conn.send_now(
            encode(History(channel=frame.channel, messages=messages, more=more, ref=frame.ref))
        )

    async def history(
        self,
        user: User,
        channel: str,
        before: str | None,
        limit: int,
        conn: Connection | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of a channel's log the user may read, oldest first."""
        await self.check_access(user, channel, conn)
        entries, more = await self.broker.history(channel, before, limit)
        return [message_dict(e.id, e.body) for e in entries], more

    async def _on_stop(self, conn: Connection, frame: Stop) -> None:
        owner = await self.broker.reply_owner(frame.reply)
        if owner is None:
            raise FrameError("not_found", "That reply is not streaming any more.")
        channel, worker = owner
        await self.check_access(conn.user, channel, conn)
        await self.stop_reply(frame.reply, worker)

    async def stop_reply(self, reply: str, worker: str) -> None:
        """Stop a reply wherever it runs: here directly, elsewhere through its worker's topic."""
        if worker == self.worker and self.runner.stop(reply):
            return
        await self.broker.publish(_worker_topic(worker), json.dumps({"op": "stop", "reply": reply}))

    # -- frames from the broker ----------------------------------------------------------
    def _on_frame(self, topic: str, payload: str) -> None:
        if topic.startswith("worker:"):
            self._on_command(payload)
            return
        if topic.startswith("user:"):
            self._spawn(self._on_user_event(topic[5:], payload), "user-event")
            return
        if not self._track(topic, payload):
            return
        conns = self.registry.in_channel(topic)
        for conn in conns:
            conn.deliver(topic, payload)
        self.metrics.frames_out.inc(len(self.registry.by_channel.get(topic, ())))

    def _track(self, channel: str, payload: str) -> bool:
        """Remember the newest id per channel and live replies, reading only the frame's head.

        Stored frames reach a worker in id order, so one whose id is not newer than the last
        seen was already delivered (by the replay after a broker blink): False drops it.
        """
        message_id = stored_id(payload)
        if message_id is not None:
            last = self._last_ids.get(channel)
            if last is not None and parse_id(message_id) <= parse_id(last):
                return False
            self._last_ids[channel] = message_id
        if payload.startswith('{"type":"delta"'):
            reply = json.loads(payload).get("reply", "")
            self._reply_seen[reply] = (channel, time.monotonic())
            self._reply_lapsed.pop(reply, None)
        elif message_id is not None and payload.startswith('{"type":"done"'):
            reply = json.loads(payload).get("reply", "")
            self._reply_seen.pop(reply, None)
            self._reply_lapsed.pop(reply, None)
        return True

    def _on_command(self, payload: str) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            command = json.loads(payload)
            if command.get("op") == "stop":
                self.runner.stop(str(command.get("reply")))

    async def _on_user_event(self, user_id: str, payload: str) -> None:
        event = json.loads(payload)
        room, ref = str(event.get("room")), event.get("ref")
        channel = room_channel(room)
        for conn in list(self.registry.of_user(user_id)):
            async with self._lock(conn):
                if event.get("op") == "join":
                    await self._sync_join(conn, room, ref)
                elif event.get("op") == "leave":
                    await self._detach(conn, channel)
                    conn.send_now(encode(Left(room=room, ref=ref)))

    async def _sync_join(self, conn: Connection, room: str, ref: str | None) -> None:
        """Put one connection of the joining user into the room and send it ``joined``."""
        channel = room_channel(room)
        conn.hold()
        await self._attach(conn, channel)
        await self.broker.presence_touch(
            room, conn.user.id, self.worker, self.settings.presence_ttl
        )
        entries, _more = await self.broker.history(channel, None, 50)
        members = await self._online_members(room)
        history = [message_dict(e.id, e.body) for e in entries]
        conn.send_now(encode(Joined(room=room, members=members, history=history, ref=ref)))
        last = entries[-1].id if entries else "0-0"
        self._release(conn, {channel: Cursor(parse_id(last))})

    async def _on_reconnect(self) -> None:
        """After a broker blink, give local connections what was stored while frames were lost."""
        for channel, last in list(self._last_ids.items()):
            try:
                if last == "0-0":  # the log was empty when this worker subscribed
                    entries, _more = await self.broker.history(
                        channel, None, self.settings.outbound_queue // 2
                    )
                    replay: Replay | None = Replay(entries, [])
                else:
                    replay = await self.broker.replay(channel, last)
            except BrokerError:
                return
            conns = list(self.registry.in_channel(channel))
            if replay is None:
                for conn in conns:
                    conn.close(CLOSE_RESTARTING, "history changed; reconnect and resume")
                continue
            for entry in replay.entries:
                frame = frame_from_entry("message", entry.id, entry.body)
                if not self._track(channel, frame):
                    continue
                for conn in conns:
                    conn.deliver(channel, frame)

    # -- presence and upkeep -------------------------------------------------------------
    async def _online_members(self, room: str) -> list[Member]:
        members = await self.broker.room_members(room)
        online = await self.broker.presence_online(room)
        self._online[room] = frozenset(online & members.keys())
        return sorted(
            (Member(id=uid, name=members[uid]) for uid in self._online[room]),
            key=lambda m: (m.name.lower(), m.id),
        )

    async def _publish_presence(self, room: str) -> None:
        members = await self._online_members(room)
        await self.broker.publish(room_channel(room), encode(Presence(room=room, members=members)))

    async def _upkeep(self) -> None:
        """Renew leases, notice presence that faded and replies whose worker died."""
        period = min(self.settings.presence_ttl, self.settings.reply_lease) / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self._upkeep_once()
            except BrokerError as exc:
                log.warning("upkeep skipped: %s", exc)
            except Exception:
                log.exception("upkeep failed")

    async def _upkeep_once(self) -> None:
        leases = self.runner.leases()
        if leases:
            await self.broker.reply_renew(leases, self.settings.reply_lease)
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
                frame = encode(Presence(room=room, members=members))
                for conn in self.registry.in_channel(channel):
                    conn.deliver(channel, frame)
        now = time.monotonic()
        lease = self.settings.reply_lease
        for reply, (channel, seen) in list(self._reply_seen.items()):
            if now - seen < lease:
                continue
            states = [s for s in await self.broker.inflight(channel) if s.reply == reply]
            if not states:  # finished
                self._reply_seen.pop(reply, None)
                self._reply_lapsed.pop(reply, None)
            elif states[0].alive:  # quiet but leased: look again, its worker may still die
                self._reply_seen[reply] = (channel, now)
                self._reply_lapsed.pop(reply, None)
            elif now - self._reply_lapsed.setdefault(reply, now) >= lease:
                # Lapsed for a whole lease: its worker is gone. A lapse seen once may be Redis
                # back from an outage (leases ran out meanwhile) before the worker renewed.
                self._reply_seen.pop(reply, None)
                self._reply_lapsed.pop(reply, None)
                await self.runner.finish_orphan(channel, reply, states[0].deltas)
