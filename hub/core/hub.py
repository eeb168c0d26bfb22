"""The hub facade: life cycle, the dispatch tables (client frames, broker frames), sessions.

Where things happen (each module holds one responsibility):
``messages`` posting, reading and stopping (the web layer calls it as ``hub.messages``),
``sessions`` open and close connections, ``rooms`` join/leave and presence, ``fanout``
delivers broker frames to local connections, ``presence`` sends presence diffs, ``limits``
holds and renews the shared limits, ``watchdog`` beats this worker's heartbeat and takes over
the replies of dead workers, ``assistant`` runs replies, ``topics`` names every pub/sub topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from hub.broker.base import Broker, BrokerError, Envelope
from hub.core.assistant import AssistantRunner
from hub.core.connection import Connection
from hub.core.fanout import Fanout
from hub.core.identity import TokenWatch
from hub.core.limits import Limiter, release_quietly
from hub.core.messages import Messages
from hub.core.presence import PresenceDiffs
from hub.core.registry import Registry
from hub.core.rooms import RoomService
from hub.core.sessions import Sessions
from hub.core.tasks import Tasks
from hub.core.tickets import issue_ticket, redeem_ticket
from hub.core.topics import parse_topic, read_command, worker_topic
from hub.core.watchdog import Watchdog
from hub.errors import UNAVAILABLE, CloseCode, ErrorCode, FrameError
from hub.llm.base import LLM
from hub.metrics import Metrics
from hub.protocol import (
    ClientFrame,
    Error,
    HistoryRequest,
    Join,
    Leave,
    MembersRequest,
    Ping,
    Pong,
    Send,
    Stop,
    User,
    encode,
    frame_from_entry,
)
from hub.settings import Settings

log = logging.getLogger(__name__)


async def _pong(conn: Connection, frame: Ping) -> None:
    """``ping``: a client-side liveness check, answered at once and touching nothing else."""
    conn.send_now(encode(Pong(ref=frame.ref)))


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
        self.messages = Messages(
            settings, broker, self.runner, self.limits, self.tokens, metrics, lambda: self.draining
        )
        self._tasks = Tasks()
        self._handlers: dict[type[Any], Callable[[Connection, Any], Awaitable[None]]] = {
            Join: self.rooms.join,
            Leave: self.rooms.leave,
            Send: self.messages.on_send,
            Stop: self.messages.on_stop,
            HistoryRequest: self.messages.on_history,
            Ping: _pong,
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

    # -- sessions, and the web layer's other entry points (posting: ``messages``) --------
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
        await self.messages.check_access(conn.user, channel, None)
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

    async def guest_login(self, ip: str) -> None:
        """Count a guest sign-in from ``ip`` against HUB_LOGIN_RATE / HUB_LOGIN_BURST."""
        await self.limits.guest_login(ip)

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

    # -- frames from the broker ----------------------------------------------------------
    def _on_frame(self, name: str, frame: Envelope) -> None:
        """A channel's frames go to fan-out; a worker's or user's topic carries commands."""
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
