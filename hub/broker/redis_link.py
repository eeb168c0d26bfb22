"""The Redis pub/sub link of one worker: every topic it needs on one connection, kept alive.

A listener task reads the link, answers for its health with a PING watchdog, and rebuilds it
(with every subscription) after any failure; frames of a new link wait until the hub has
caught up with what the gap missed (``on_reconnect``). On a Redis Cluster the "connection" is
a ``ShardedPubSub`` (one SSUBSCRIBE connection per shard), rebuilt as a whole the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hub.broker.base import Envelope, FrameHandler, ReconnectHandler
from hub.broker.redis_names import RedisNames

log = logging.getLogger(__name__)

_PING_TOKEN = "hub-watchdog"


class PubSubConnection(Protocol):
    """What the link needs of a pub/sub connection: redis-py's ``PubSub`` or ``ShardedPubSub``."""

    async def connect(self) -> None: ...

    async def subscribe(self, *names: str) -> None: ...

    def unsubscribe(self, *names: str) -> Awaitable[Any]: ...

    def ping(self, message: str) -> Awaitable[Any]: ...

    async def get_message(self, *, timeout: float) -> dict[str, Any] | None: ...

    async def aclose(self) -> None: ...


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


class PubSubLink:
    """One worker's subscriptions, counted per topic, on one self-healing pub/sub connection."""

    def __init__(
        self,
        open_pubsub: Callable[[], PubSubConnection],
        names: RedisNames,
        where: str,
        *,
        op_timeout: float,
        ping_interval: float,
        ping_timeout: float,
        backoff_first: float,
        backoff_cap: float,
    ) -> None:
        self._open_pubsub = open_pubsub
        self._names = names
        self._where = where
        self._op_timeout = op_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff = _Backoff(backoff_first, backoff_cap)
        self._on_frame: FrameHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._counts: dict[str, int] = {}
        self._live: set[str] = set()
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSubConnection | None = None
        self._lock = asyncio.Lock()
        self._link_up = asyncio.Event()
        self._link_failed = False
        self._links = 0
        self._missed_first_link = False
        self._listener: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._reconnect_due = False
        self._held: list[tuple[str, str]] | None = None

    @property
    def connected(self) -> bool:
        """True while the link is up (subscribed and answering the watchdog)."""
        return self._link_up.is_set()

    @property
    def started(self) -> bool:
        """Whether ``start`` was called (a broker used only for commands never starts it)."""
        return self._listener is not None

    async def start(self, on_frame: FrameHandler, on_reconnect: ReconnectHandler) -> None:
        """Start the listener and wait a bounded time for the first link; a Redis that is not
        up yet is not fatal: the listener keeps trying and ``ping()`` is False meanwhile."""
        if self._listener is not None:
            raise RuntimeError("the Redis broker was already started")
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
        """Cancel the listener and the catch-up task, and close the connection."""
        tasks = [t for t in (self._listener, self._reconnect_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        await self._drop_link()

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
            pubsub = self._open_pubsub()
            try:
                async with asyncio.timeout(self._op_timeout):
                    await pubsub.connect()
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
                    await pubsub.aclose()
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

    def _deliver(self, topic: str, data: str) -> None:
        if self._counts.get(topic, 0) <= 0 or self._on_frame is None:
            return
        try:
            frame = Envelope.unpack(data)
        except ValueError:
            log.warning("dropped a frame of %s that is not an envelope: %.80r", topic, data)
            return
        try:
            self._on_frame(topic, frame)
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
                await pubsub.aclose()

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
