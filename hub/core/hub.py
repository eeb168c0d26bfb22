"""The hub facade: life cycle, the dispatch table, and the use cases the web layer calls.

Where things happen (each module holds one responsibility):
``sessions`` open and close connections, ``rooms`` join/leave and presence, ``fanout``
delivers broker frames to local connections, ``watchdog`` beats this worker's heartbeat and
takes over the replies of dead workers,
``assistant`` runs replies, ``topics`` names every pub/sub topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from hub.broker.base import AppendResult, Broker, BrokerError, Entry, Envelope
from hub.core.access import refusal, room_allowed
from hub.core.assistant import AssistantRunner, ReplyListener, new_reply_id
from hub.core.connection import Connection
from hub.core.fanout import Fanout
from hub.core.identity import TokenWatch
from hub.core.limits import Limiter, release_quietly
from hub.core.presence import PresenceDiffs
from hub.core.registry import Registry
from hub.core.rooms import RoomService
from hub.core.sessions import Sessions
from hub.core.tasks import Tasks
from hub.core.tickets import issue_ticket, redeem_ticket
from hub.core.topics import command, parse_topic, read_command, worker_topic
from hub.core.watchdog import Watchdog
from hub.errors import UNAVAILABLE, CloseCode, ErrorCode, FrameError
from hub.llm.base import LLM
from hub.metrics import Metrics
from hub.protocol import (
    Ack,
    Author,
    ClientFrame,
    Error,
    History,
    HistoryRequest,
    Join,
    Leave,
    MembersRequest,
    Message,
    Ping,
    Pong,
    Send,
    Stop,
    User,
    channel_kind,
    dm_channel,
    encode,
    entry_body,
    frame_from_entry,
    message_dict,
    now_ms,
)
from hub.render import render_markdown
from hub.settings import Settings

log = logging.getLogger(__name__)

MENTION_RE = re.compile(r"(?<![\w@])@assistant\b", re.IGNORECASE)


def check_text(text: str, max_text: int, ref: str | None) -> None:
    """A message must say something and fit the length limit."""
    if len(text) > max_text:
        raise FrameError(
            "too_long",
            f"Messages may be at most {max_text} characters; this one has {len(text)}.",
            ref,
        )
    if not text.strip():
        raise FrameError("invalid", "The message is empty.", ref)


def newest_within(entries: list[Entry], budget: int) -> list[Entry]:
    """The newest entries whose bodies fit in ``budget`` characters (always at least one)."""
    total, start = 0, len(entries)
    while start > 0:
        size = len(entries[start - 1].body)
        if total + size > budget and start < len(entries):
            break
        total += size
        start -= 1
    return entries[start:]


class Hub:
    """One worker's share of the hub; every shared fact lives in the broker."""

    def __init__(self, settings: Settings, broker: Broker, llm: LLM, metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.llm = llm
        self.metrics = metrics
        self.worker = settings.worker_id
        # Replies name this process: a worker restarted under its id takes over its old ones.
        self.incarnation = f"{self.worker}#{secrets.token_hex(4)}"
        self.registry = Registry()
        self.runner = AssistantRunner(settings, broker, llm, self.incarnation, metrics)
        self.limits = Limiter(settings, broker, self.incarnation)
        self.tokens = TokenWatch(broker)
        self.watchdog = Watchdog(settings, broker, self.runner, self.incarnation, metrics)
        self.diffs = PresenceDiffs(broker, self.registry)
        self.fanout = Fanout(settings, broker, self.registry, self.diffs, metrics)
        self.rooms = RoomService(settings, broker, self.registry, self.fanout, self.incarnation)
        self.watchdog.on_dead += [self.rooms.sweep_worker, self.limits.sweep_worker]
        self.watchdog.on_rejoin += [self.rooms.enter_all, self.limits.retake]
        self.sessions = Sessions(settings, broker, self.registry, self.fanout, self.rooms, metrics)
        self.draining = False
        self._tasks = Tasks()
        self._handlers: dict[type[Any], Callable[[Connection, Any], Awaitable[None]]] = {
            Join: self.rooms.join,
            Leave: self.rooms.leave,
            Send: self._on_send,
            Stop: self._on_stop,
            HistoryRequest: self._on_history,
            Ping: self._on_ping,
            MembersRequest: self.rooms.members,
        }

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the broker, listen for this worker's commands, start the background loops."""
        await self.broker.start(self._on_frame, self.fanout.catch_up)
        await self.broker.subscribe(worker_topic(self.incarnation))
        self._tasks.spawn(self.limits.run(lambda: set(self.runner.running)), "upkeep")
        await self.watchdog.beat()  # before any reply can start: a reply's worker is known
        self._tasks.spawn(self.watchdog.run(), "watchdog")
        self._tasks.spawn(self.diffs.run(self.settings.presence_interval), "presence-diffs")

    async def drain(self) -> None:
        """Stop taking work, let replies finish (bounded), send every client elsewhere (1012)."""
        self.draining = True
        await self.runner.wait_idle(self.settings.drain_timeout / 2)
        conns = self.registry.all()
        for conn in conns:
            conn.close(CloseCode.RESTARTING, "worker restarting; reconnect and resume")
        await asyncio.gather(
            *(c.wait_closed(self.settings.drain_timeout / 4) for c in conns),
            return_exceptions=True,
        )

    async def close(self) -> None:
        """Cancel every task this hub started and close the broker."""
        self.draining = True
        # With other workers (Redis), replies still running are left for them to take over.
        hand_over = self.settings.takeover and not self.settings.broker_url.startswith("memory:")
        await self._tasks.cancel_all()
        await self.runner.shutdown(hand_over=hand_over)
        if hand_over:
            await self.watchdog.hand_over()
        await self.limits.close()
        await self.rooms.close()
        await self.llm.aclose()
        await self.broker.close()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether this worker can serve (broker reachable, not draining), and the details."""
        ok = await self.broker.ping()
        status = "draining" if self.draining else ("ok" if ok else "down")
        return ok and not self.draining, {
            "status": status,
            "worker": self.worker,
            "broker": "ok" if ok else "unreachable",
            "llm": self.llm.name,
            "connections": len(self.registry.all()),
        }

    # -- sessions (the web layer's entry points) -----------------------------------------
    async def open_session(self, conn: Connection, resume: dict[str, str] | None) -> None:
        """Welcome a signed-in connection (see ``Sessions.open``) within the connection limits.

        Raises FrameError when the token was revoked, or the user or its address holds too many
        connections already.
        """
        await self.tokens.check(conn.user)
        await self.limits.admit(conn)
        await self.sessions.open(conn, resume)
        self.tokens.watch(conn)
        await self.limits.touch_guest(conn.user)

    async def close_session(self, conn: Connection) -> None:
        """Forget a connection (see ``Sessions.close``) and free its connection slots."""
        self.tokens.unwatch(conn)
        await release_quietly(self.limits, conn)
        await self.sessions.close(conn)

    async def watch_reply(self, conn: Connection, channel: str, reply: str) -> None:
        """Give a connection one channel's frames (from its replies in flight on), and the
        reply's stored end if it finished before; the caller keeps what concerns ``reply``."""
        await self.check_access(conn.user, channel, None)
        await self.sessions.watch(conn, channel)
        entries, _more = await self.broker.history(channel, None, 50)
        for entry in entries:
            if json.loads(entry.body).get("reply") == reply:
                conn.send_now(frame_from_entry("message", entry.id, entry.body))

    async def unwatch(self, conn: Connection) -> None:
        """The end of ``watch_reply``."""
        await self.sessions.unwatch(conn)

    async def join_room(self, user: User, room: str) -> None:
        """Make a user a member of a room without a connection (HTTP); their tabs get ``joined``."""
        await self.tokens.check(user)
        await self.rooms.join_user(user, room, None)
        await self.limits.touch_guest(user)

    async def leave_room(self, user: User, room: str) -> None:
        """End a user's membership without a connection (HTTP); their tabs get ``left``."""
        await self.tokens.check(user)
        await self.rooms.leave_user(user, room, None)

    async def issue_ticket(self, user: User) -> str:
        """A single-use ticket for an event stream (see ``hub.core.tickets``)."""
        await self.tokens.check(user)
        return await issue_ticket(self.broker, user)

    async def redeem_ticket(self, ticket: str) -> User | None:
        """The user of a ticket, used up now; None when it is unknown, used or expired."""
        return await redeem_ticket(self.broker, ticket)

    # -- client frames -------------------------------------------------------------------
    async def handle(self, conn: Connection, frame: ClientFrame) -> None:
        """Dispatch one parsed frame through the table; errors go back as ``error`` frames."""
        self.metrics.frames_in.labels(frame.type).inc()
        handler = self._handlers.get(type(frame))
        try:
            if handler is None:
                raise FrameError("invalid", "Send 'hello' only once, as the first frame.")
            await handler(conn, frame)
            if isinstance(frame, Join):
                await self.limits.touch_guest(conn.user)
        except FrameError as exc:
            self.send_error(conn, exc.code, exc.message, exc.ref or frame.ref, exc.retry_after)
        except BrokerError as exc:
            log.warning("broker error for %s: %s", frame.type, exc)
            self.send_error(conn, "unavailable", UNAVAILABLE, frame.ref, 1.0)

    def send_error(
        self,
        conn: Connection,
        code: ErrorCode,
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

    async def _on_history(self, conn: Connection, frame: HistoryRequest) -> None:
        if conn.history_pending is not None:
            raise FrameError(
                "rate_limited",
                "Read the history page on its way before asking for another one.",
                frame.ref,
                0.5,
            )
        messages, more = await self.history(
            conn.user, frame.channel, frame.before, frame.limit, conn
        )
        payload = encode(
            History(channel=frame.channel, messages=messages, more=more, ref=frame.ref)
        )
        conn.history_pending = payload
        conn.send_now(payload)

    async def _on_stop(self, conn: Connection, frame: Stop) -> None:
        owner = await self.broker.reply_owner(frame.reply)
        if owner is None:
            raise FrameError("not_found", "That reply is not streaming any more.")
        channel, worker = owner
        await self.check_access(conn.user, channel, conn)
        await self.stop_reply(frame.reply, worker)

    # -- use cases -----------------------------------------------------------------------
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
        check_text(text, self.settings.max_text, ref)
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
        kind, _name = channel_kind(channel)
        wanted = ask if ask is not None else kind == "dm" or bool(MENTION_RE.search(text))
        held = await self.limits.reserve_reply(user, channel, ref) if wanted else None
        reply = new_reply_id() if held is not None else None  # in flight as the question is stored
        try:
            result = await self.broker.append(
                channel, entry_body(body), dedupe=dedupe, start_reply=reply, owner=self.incarnation
            )
        except BaseException:
            if held is not None:
                await self.limits.cancel(held)
            raise
        assert result is not None
        await self.limits.touch_guest(user)
        if result.duplicate:
            if held is not None:
                await self.limits.cancel(held)
            return result, None
        self.metrics.messages.inc()
        if held is None:
            return result, None
        held.reply = self.runner.start(
            channel, upto=result.id, reply=reply, listener=self.limits.track(held, listener)
        )
        return result, held.reply

    async def publish_message(self, channel: str, author: Author, text: str) -> str:
        """Store a backend's message in a user's dm or a room (proactive message, hand-off)."""
        check_text(text, self.settings.max_text, None)
        message = Message(channel=channel, id="0-0", author=author, text=text, ts=now_ms())
        if author.role == "assistant":
            message = message.model_copy(update={"html": render_markdown(text)})
        result = await self.broker.append(channel, entry_body(message))
        assert result is not None
        return result.id

    async def check_access(self, user: User, channel: str, conn: Connection | None) -> None:
        """A dm is its owner's alone; a room is open to its members (join first) whose token
        allows it; a request without a connection also proves its token was not revoked."""
        if conn is None:
            await self.tokens.check(user)
        kind, name = channel_kind(channel)
        if kind == "dm":
            if name != user.id:
                raise FrameError("forbidden", "That is another user's private channel.")
            return
        if not room_allowed(user, name, self.settings):
            raise refusal(user, name, self.settings, None)
        if conn is not None and channel in conn.channels:
            return
        if name not in await self.broker.user_rooms(user.id):
            raise FrameError("forbidden", f"Join the room '{name}' first.")

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
        page = newest_within(entries, self.settings.history_bytes)
        more = more or len(page) < len(entries)
        return [message_dict(e.id, e.body) for e in page], more

    async def stop_reply(self, reply: str, worker: str) -> None:
        """Stop a reply wherever it runs: here directly, elsewhere through its worker's topic."""
        if worker == self.incarnation and self.runner.stop(reply):
            return
        await self.broker.publish(worker_topic(worker), command("stop", reply=reply))

    # -- frames from the broker ----------------------------------------------------------
    def _on_frame(self, name: str, frame: Envelope) -> None:
        topic = parse_topic(name)
        if topic.kind == "channel":
            self.fanout.deliver(name, frame)
            return
        fields = read_command(frame)
        if fields is None:
            return
        if topic.kind == "worker":
            if fields["op"] == "stop":
                self.runner.stop(str(fields.get("reply")))
        elif fields["op"] == "revoke":
            self.tokens.on_revoke(list(self.registry.of_user(topic.name)), fields)
        else:
            self._tasks.spawn(self.rooms.on_user_command(topic.name, fields), "user-command")
