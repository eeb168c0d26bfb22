"""The shared broker: Redis pub/sub for fan-out, Streams for logs, Lua for atomic steps.

One pub/sub connection per worker carries every topic this worker has local interest in; a
listener task reads it, answers for its health with a PING watchdog, and rebuilds it (with
every subscription) after any failure. Commands use pooled connections with short timeouts,
so a Redis that is down makes them fail fast with ``BrokerError`` instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from hub.broker import redis_scripts as lua
from hub.broker.base import (
    AppendResult,
    BrokerError,
    Entry,
    FrameHandler,
    InflightReply,
    ReconnectHandler,
    Replay,
)
from hub.broker.redis_names import RedisNames
from hub.protocol import parse_id

log = logging.getLogger(__name__)

FINISHED_DELTAS_TTL = 60.0
"""Seconds a finished reply's deltas stay, for a client resuming right at its ``done``."""

ORPHAN_TTL = 86400.0
"""Seconds a reply's deltas and reply→channel key live at most, if nobody ever finishes it."""

_PING_TOKEN = "hub-watchdog"


class _LinkDead(Exception):
    """The pub/sub link stopped answering (or a command on it failed): rebuild it."""


class _Backoff:
    """Capped exponential delays with jitter, so restarted workers do not reconnect in step."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        delay = min(self._cap, self._first * 2 ** min(self._attempt, 30))
        self._attempt += 1
        return random.uniform(delay / 2, delay)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBroker:
    """Implements ``Broker`` on one Redis shared by every worker."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "hub",
        history_max: int = 1000,
        op_timeout: float = 2.0,
        ping_interval: float = 3.0,
        ping_timeout: float = 2.0,
        backoff_first: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        if not client.get_encoder().decode_responses:  # type: ignore[no-untyped-call]
            raise ValueError("RedisBroker needs a client made with decode_responses=True")
        self._redis = client
        self._names = RedisNames(prefix)
        self._history_max = history_max
        self._op_timeout = op_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff = _Backoff(backoff_first, backoff_cap)
        kwargs = client.connection_pool.connection_kwargs
        self._where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")

        self._append = client.register_script(lua.APPEND)
        self._replay = client.register_script(lua.REPLAY)
        self._inflight = client.register_script(lua.INFLIGHT)
        self._delta = client.register_script(lua.DELTA)
        self._renew = client.register_script(lua.RENEW)
        self._presence_touch = client.register_script(lua.PRESENCE_TOUCH)
        self._presence_online = client.register_script(lua.PRESENCE_ONLINE)
        self._presence_drop_user = client.register_script(lua.PRESENCE_DROP_USER)
        self._rate_take = client.register_script(lua.RATE_TAKE)

        self._on_frame: FrameHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._counts: dict[str, int] = {}
        self._live: set[str] = set()
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()
        self._link_up = asyncio.Event()
        self._link_failed = False
        self._links = 0
        self._missed_first_link = False
        self._listener: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._reconnect_due = False
        self._held: list[tuple[str, str]] | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "hub", history_max: int = 1000, **options: float
    ) -> RedisBroker:
        """Connect by URL with short timeouts and no hidden retries (a retried Lua append could
        store a message twice; callers retry with their dedupe key instead)."""
        timeout = options.get("op_timeout", 2.0)
        tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
            **tcp,
        )
        return cls(client, prefix=prefix, history_max=history_max, **options)

    @property
    def connected(self) -> bool:
        """True while the pub/sub link is up (subscribed and answering the watchdog)."""
        return self._link_up.is_set()

    @property
    def names(self) -> RedisNames:
        """The key and channel names this broker uses."""
        return self._names

    # -- life ----------------------------------------------------------------------------
    async def start(self, on_frame: FrameHandler, on_reconnect: ReconnectHandler) -> None:
        """Start the listener and wait a bounded time for the first link; a Redis that is not
        up yet is not fatal: the listener keeps trying and ``ping()`` is False meanwhile."""
        if self._listener is not None:
            raise RuntimeError("RedisBroker.start() was already called")
        self._on_frame = on_frame
        self._on_reconnect = on_reconnect
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")
        try:
            await asyncio.wait_for(self._link_up.wait(), self._op_timeout * 2)
        except TimeoutError:
            self._missed_first_link = True
            log.warning(
                "Redis at %s is not reachable yet; the hub keeps trying in the background "
                "and /health reports 503 until it answers.",
                self._where,
            )

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._listener, self._reconnect_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        await self._drop_link()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def ping(self) -> bool:
        """True when a command round trip works and, once started, the pub/sub link is up."""
        if self._closed:
            return False
        try:
            async with asyncio.timeout(self._op_timeout):
                answered = bool(await self._redis.ping())
        except Exception:
            return False
        return answered and (self._listener is None or self._link_up.is_set())

    # -- pub/sub -------------------------------------------------------------------------
    def subscribed(self) -> dict[str, int]:
        """Local subscription counts, for tests and metrics."""
        return dict(self._counts)

    async def subscribe(self, topic: str) -> None:
        """Count interest; on the first, subscribe and wait (bounded) for Redis to confirm.

        While the link is down this only counts: the listener subscribes every counted topic
        when the link is back and then calls ``on_reconnect``, so nothing is raised here.
        """
        count = self._counts.get(topic, 0) + 1
        self._counts[topic] = count
        if count == 1:
            await self._sync_topic(topic)

    async def unsubscribe(self, topic: str) -> None:
        count = self._counts.get(topic, 0) - 1
        if count > 0:
            self._counts[topic] = count
            return
        if self._counts.pop(topic, None) is not None:
            await self._sync_topic(topic)

    async def publish(self, topic: str, payload: str) -> None:
        async with self._guard("publish a frame"):
            await self._redis.publish(self._names.pub(topic), payload)

    async def _sync_topic(self, topic: str) -> None:
        """Make the link's subscription to ``topic`` match its local count."""
        name = self._names.pub(topic)
        waiter: asyncio.Future[None] | None = None
        async with self._lock:
            pubsub = self._pubsub
            want = self._counts.get(topic, 0) > 0
            if pubsub is None or want == (topic in self._live):
                return
            try:
                async with asyncio.timeout(self._op_timeout):
                    # Marked before sending: if this call is cancelled mid-send, the mark still
                    # matches what Redis may have received.
                    if want:
                        waiter = self._confirm.get(name)
                        if waiter is None:
                            waiter = asyncio.get_running_loop().create_future()
                            self._confirm[name] = waiter
                        self._live.add(topic)
                        await pubsub.subscribe(name)
                    else:
                        self._live.discard(topic)
                        await pubsub.unsubscribe(name)
            except Exception as exc:
                log.warning("Redis pub/sub link failed while (un)subscribing %s: %s", topic, exc)
                self._link_failed = True
                return
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._op_timeout)
            except TimeoutError:
                log.warning("Redis did not confirm the subscription to %s in time", topic)

    # -- the listener --------------------------------------------------------------------
    async def _listen(self) -> None:
        """Keep one pub/sub link up for as long as the broker runs."""
        down_since_logged = False
        while True:
            try:
                await self._connect_link()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not down_since_logged:
                    log.warning(
                        "Cannot reach Redis at %s for pub/sub (%s); retrying with backoff.",
                        self._where,
                        exc or type(exc).__name__,
                    )
                    down_since_logged = True
                await asyncio.sleep(self._backoff.next())
                continue
            if down_since_logged or self._links > 0:
                log.info("Redis pub/sub link to %s is up again", self._where)
            down_since_logged = False
            self._backoff.reset()
            self._links += 1
            if self._links > 1 or self._missed_first_link:
                self._note_reconnect()
            try:
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "Redis pub/sub link to %s lost (%s); reconnecting.",
                    self._where,
                    exc or type(exc).__name__,
                )
            # Frames of the next link wait until on_reconnect has caught up with what this
            # gap missed: delivered before it, they would move the handler's "last seen" past
            # the gap, and the catch-up would skip (or repeat, or reorder) what it missed.
            if self._held is None:
                self._held = []
            await self._drop_link()
            await asyncio.sleep(self._backoff.next())

    async def _connect_link(self) -> None:
        """Open a pub/sub connection and subscribe every counted topic, confirmed by Redis."""
        async with self._lock:
            pubsub = self._redis.pubsub()
            try:
                async with asyncio.timeout(self._op_timeout):
                    await pubsub.connect()  # type: ignore[no-untyped-call]
                    topics = {t for t, c in self._counts.items() if c > 0}
                    pending = {self._names.pub(t) for t in topics}
                    if pending:
                        await pubsub.subscribe(*pending)
                    else:
                        await pubsub.ping(_PING_TOKEN)
                    answered = False
                    while pending or not answered:
                        message = await pubsub.get_message(timeout=self._op_timeout)
                        if message is None:
                            continue
                        answered = True
                        if message["type"] == "subscribe":
                            pending.discard(message["channel"])
                        self._dispatch(message)
            except BaseException:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            self._pubsub = pubsub
            self._live = topics
            self._link_failed = False
            self._link_up.set()

    async def _pump(self) -> None:
        """Deliver frames until the link fails; a PING unanswered in time counts as failure.

        redis-py's ``health_check_interval`` only sends a PING and never checks that anything
        comes back, so a frozen server or a silently dropped TCP path would go unnoticed;
        this loop keeps its own deadline: ``ping_interval + ping_timeout`` without a byte.
        """
        pubsub = self._pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        deadline_gap = self._ping_interval + self._ping_timeout
        heard = loop.time()
        next_ping = heard + self._ping_interval
        while True:
            now = loop.time()
            if self._link_failed:
                raise _LinkDead("a command on the pub/sub link failed")
            if now - heard > deadline_gap:
                raise _LinkDead(f"no answer to PING for {now - heard:.1f} s")
            if now >= next_ping:
                async with asyncio.timeout(self._ping_timeout):
                    await pubsub.ping(_PING_TOKEN)
                next_ping = now + self._ping_interval
            wait = min(next_ping, heard + deadline_gap) - now
            message = await pubsub.get_message(timeout=min(max(wait, 0.01), 1.0))
            if message is not None:
                heard = loop.time()
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            topic = self._names.topic_of(message["channel"])
            if topic is None:
                return
            if self._held is not None:
                self._held.append((topic, message["data"]))
                return
            self._deliver(topic, message["data"])
        elif kind == "subscribe":
            waiter = self._confirm.pop(message["channel"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _deliver(self, topic: str, payload: str) -> None:
        if self._counts.get(topic, 0) <= 0 or self._on_frame is None:
            return
        try:
            self._on_frame(topic, payload)
        except Exception:
            log.exception("on_frame failed for a frame of %s", topic)

    def _release_held(self) -> None:
        """Deliver, in arrival order, the frames kept while on_reconnect ran; keep holding if
        the link dropped again meanwhile (another on_reconnect will come)."""
        held = self._held or []
        self._held = None if self._link_up.is_set() else []
        for topic, payload in held:
            self._deliver(topic, payload)

    async def _drop_link(self) -> None:
        async with self._lock:
            pubsub, self._pubsub = self._pubsub, None
            self._live = set()
            self._link_up.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _note_reconnect(self) -> None:
        """Run ``on_reconnect`` in a task beside the listener: it may subscribe, which needs the
        listener to read the confirmation, so awaiting it inline could deadlock. Runs never
        overlap; a reconnect during a run makes one more run after it."""
        self._reconnect_due = True
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(
                self._run_reconnects(), name="redis-broker-on-reconnect"
            )

    async def _run_reconnects(self) -> None:
        try:
            while self._reconnect_due and self._on_reconnect is not None:
                self._reconnect_due = False
                try:
                    await self._on_reconnect()
                except Exception:
                    log.exception("on_reconnect failed")
        finally:
            self._release_held()

    # -- commands ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Bound a command in time and turn every Redis failure into one ``BrokerError``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerError(
                f"Redis at {self._where} could not {what}: {reason}. "
                "Check that Redis is running and reachable; the hub reconnects by itself."
            ) from exc

    async def append(
        self,
        channel: str,
        body: str,
        *,
        publish_as: str = "message",
        dedupe: str | None = None,
        dedupe_ttl: float = 86400.0,
        finish_reply: str | None = None,
    ) -> AppendResult | None:
        n = self._names
        reply = finish_reply or ""
        keys = [
            n.log(channel),
            n.meta(channel),
            n.ref(channel, dedupe or ""),
            n.inflight(channel),
            n.deltas(channel, reply),
            n.lease(channel, reply),
        ]
        args: list[str | int] = [
            body,
            publish_as,
            n.pub(channel),
            self._history_max,
            "1" if dedupe is not None else "0",
            _ms(dedupe_ttl),
            reply,
            _ms(FINISHED_DELTAS_TTL),
        ]
        async with self._guard("append a message"):
            result = cast(list[str], await self._append(keys=keys, args=args))
        if result[0] == "gone":
            return None
        return AppendResult(result[1], duplicate=result[0] == "dup")

    async def history(
        self, channel: str, before: str | None, limit: int
    ) -> tuple[list[Entry], bool]:
        bound = None if before is None else parse_id(before)
        end = "+" if bound is None else f"{bound[0]}-{bound[1]}"
        async with self._guard("read history"):
            raw = cast(
                list[tuple[str, dict[str, str]]],
                await self._redis.xrevrange(
                    self._names.log(channel), end, "-", count=limit + (2 if bound else 1)
                ),
            )
        entries = [
            Entry(entry_id, fields["b"])
            for entry_id, fields in raw
            if bound is None or parse_id(entry_id) < bound
        ]
        return entries[:limit][::-1], len(entries) > limit

    async def replay(self, channel: str, after: str) -> Replay | None:
        try:
            ms, seq = parse_id(after)
        except ValueError:
            return None
        n = self._names
        async with self._guard("replay a channel"):
            raw = await self._replay(
                keys=[n.log(channel), n.meta(channel), n.inflight(channel)],
                args=[ms, seq, n.deltas(channel, ""), n.lease(channel, "")],
            )
        if raw is None:
            return None
        entries = [Entry(entry_id, body) for entry_id, body in raw[0]]
        return Replay(entries, self._parse_inflight(channel, raw[1]))

    # -- replies in flight ---------------------------------------------------------------
    async def reply_begin(
        self, channel: str, reply: str, worker: str, meta: str, lease: float
    ) -> None:
        n = self._names
        async with self._guard("record a reply in flight"):
            # One MULTI for one Redis; with Redis Cluster the reply key (another slot) would go
            # in its own call.
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(n.inflight(channel), reply, json.dumps([worker, meta]))
            pipe.delete(n.deltas(channel, reply))
            pipe.set(n.lease(channel, reply), "1", px=_ms(lease))
            pipe.set(n.reply(reply), channel, px=_ms(ORPHAN_TTL))
            await pipe.execute()

    async def reply_delta(self, channel: str, reply: str, text: str, frame: str) -> None:
        n = self._names
        async with self._guard("publish a reply delta"):
            await self._delta(
                keys=[n.inflight(channel), n.deltas(channel, reply)],
                args=[reply, text, n.pub(channel), frame, _ms(ORPHAN_TTL)],
            )

    async def reply_renew(self, replies: list[tuple[str, str]], lease: float) -> None:
        if not replies:
            return
        n = self._names
        async with self._guard("renew reply leases"):
            pipe = self._redis.pipeline(transaction=False)
            for channel, reply in replies:
                await self._renew(
                    keys=[n.inflight(channel), n.lease(channel, reply)],
                    args=[reply, _ms(lease)],
                    client=pipe,
                )
            await pipe.execute()

    async def reply_owner(self, reply: str) -> tuple[str, str] | None:
        async with self._guard("look up a reply"):
            channel = cast(str | None, await self._redis.get(self._names.reply(reply)))
            if channel is None:
                return None
            state = cast(str | None, await self._redis.hget(self._names.inflight(channel), reply))
        if state is None:
            return None
        return channel, str(json.loads(state)[0])

    async def inflight(self, channel: str) -> list[InflightReply]:
        n = self._names
        async with self._guard("read replies in flight"):
            raw = await self._inflight(
                keys=[n.inflight(channel)],
                args=[n.deltas(channel, ""), n.lease(channel, "")],
            )
        return self._parse_inflight(channel, raw)

    @staticmethod
    def _parse_inflight(channel: str, raw: list[Any]) -> list[InflightReply]:
        out = []
        for reply, state, alive, deltas in raw:
            worker, meta = json.loads(state)
            out.append(InflightReply(reply, channel, worker, meta, list(deltas), bool(alive)))
        return out

    # -- rooms and presence --------------------------------------------------------------
    async def room_join(self, room: str, user_id: str, name: str) -> bool:
        async with self._guard("join a room"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._names.members(room), user_id, name)
            pipe.sadd(self._names.rooms(user_id), room)
            added, _ = await pipe.execute()
        return bool(added)

    async def room_leave(self, room: str, user_id: str) -> bool:
        async with self._guard("leave a room"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._names.members(room), user_id)
            pipe.srem(self._names.rooms(user_id), room)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def room_members(self, room: str) -> dict[str, str]:
        async with self._guard("read room members"):
            return cast(dict[str, str], await self._redis.hgetall(self._names.members(room)))

    async def user_rooms(self, user_id: str) -> list[str]:
        async with self._guard("read a user's rooms"):
            rooms = cast(set[str], await self._redis.smembers(self._names.rooms(user_id)))
        return sorted(rooms)

    async def presence_touch(self, room: str, user_id: str, worker: str, ttl: float) -> None:
        async with self._guard("mark presence"):
            await self._presence_touch(
                keys=[self._names.presence(room)], args=[f"{user_id}|{worker}", _ms(ttl)]
            )

    async def presence_drop(self, room: str, user_id: str, worker: str | None) -> None:
        key = self._names.presence(room)
        async with self._guard("drop presence"):
            if worker is None:
                await self._presence_drop_user(keys=[key], args=[f"{user_id}|"])
            else:
                await self._redis.zrem(key, f"{user_id}|{worker}")

    async def presence_online(self, room: str) -> set[str]:
        async with self._guard("read presence"):
            members = await self._presence_online(keys=[self._names.presence(room)])
        return {member.partition("|")[0] for member in members}

    # -- limits --------------------------------------------------------------------------
    async def rate_take(self, key: str, rate: float, burst: int) -> float:
        async with self._guard("check a rate limit"):
            wait = await self._rate_take(keys=[self._names.rate(key)], args=[rate, burst])
        return float(wait)
