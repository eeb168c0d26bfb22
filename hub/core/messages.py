"""Messages: who may read and write a channel, posting (and asking the assistant), history, stop.

The web layer calls this service as ``hub.messages`` (``post``, ``history``, ``publish``,
``check_access``) rather than through pass-through methods on ``Hub``, so that each use case
has one signature in one place; the hub's dispatch table routes ``send``, ``history`` and
``stop`` frames to the ``on_*`` handlers here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from hub.broker.base import AppendResult, ChannelLog, Entry, PubSub, RateLimits, Replies, Rooms
from hub.core.access import refusal, room_allowed, take_or_refuse
from hub.core.assistant import AssistantRunner, ReplyListener, new_reply_id
from hub.core.connection import Connection
from hub.core.identity import TokenWatch
from hub.core.limits import Limiter
from hub.core.topics import command, worker_topic
from hub.errors import FrameError
from hub.metrics import Metrics
from hub.protocol import (
    Ack,
    Author,
    History,
    HistoryRequest,
    Message,
    Send,
    Stop,
    User,
    channel_kind,
    dm_channel,
    encode,
    entry_body,
    message_dict,
    now_ms,
)
from hub.render import render_markdown
from hub.settings import Settings

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


class MessageBroker(PubSub, ChannelLog, Replies, Rooms, RateLimits, Protocol):
    """The broker roles messages use."""


class Messages:
    """This worker's side of posting and reading; the logs themselves live in the broker."""

    def __init__(
        self,
        settings: Settings,
        broker: MessageBroker,
        runner: AssistantRunner,
        limits: Limiter,
        tokens: TokenWatch,
        metrics: Metrics,
        draining: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.limits = limits
        self.tokens = tokens
        self.metrics = metrics
        self.draining = draining

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
        if self.draining():
            raise FrameError("unavailable", "This worker is restarting; reconnect.", ref, 1.0)
        await self.check_access(user, channel, conn)
        check_text(text, self.settings.max_text, ref)
        await take_or_refuse(
            self.broker,
            f"send:{user.id}",
            self.settings.rate,
            self.settings.rate_burst,
            "You are sending too fast; wait {wait:.1f} s and try again.",
            ref,
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
                channel,
                entry_body(body),
                dedupe=dedupe,
                start_reply=reply,
                owner=self.runner.worker,
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

    async def publish(self, channel: str, author: Author, text: str) -> str:
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

    # -- client frames -------------------------------------------------------------------
    async def on_send(self, conn: Connection, frame: Send) -> None:
        """``send``: post, then ``ack`` with the stored id."""
        channel = frame.channel or dm_channel(conn.user.id)
        result, _reply = await self.post(conn.user, channel, frame.text, frame.ref, conn=conn)
        conn.send_now(encode(Ack(ref=frame.ref, id=result.id)))

    async def on_history(self, conn: Connection, frame: HistoryRequest) -> None:
        """``history``: one page at a time per connection, so a client cannot pile them up."""
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

    async def on_stop(self, conn: Connection, frame: Stop) -> None:
        """``stop``: stop a reply wherever it runs, here directly, elsewhere through its worker."""
        owner = await self.broker.reply_owner(frame.reply)
        if owner is None:
            raise FrameError("not_found", "That reply is not streaming any more.")
        channel, worker = owner
        await self.check_access(conn.user, channel, conn)
        if worker == self.runner.worker and self.runner.stop(frame.reply):
            return
        await self.broker.publish(worker_topic(worker), command("stop", reply=frame.reply))
