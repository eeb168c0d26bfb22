"""The assistant runner: history → prompt → streamed pieces → coalesced deltas → stored reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.broker.base import Broker, BrokerError, Envelope, InflightReply, Kind, ReplyLost
from hub.core.prompt import build_request
from hub.errors import UNAVAILABLE
from hub.llm.base import LLM, Finish, LLMError, LLMRequest
from hub.metrics import Metrics
from hub.protocol import (
    Author,
    Delta,
    Done,
    Error,
    StopReason,
    Usage,
    encode,
    entry_body,
    now_ms,
)
from hub.render import render_markdown
from hub.settings import Settings

log = logging.getLogger(__name__)

ASSISTANT = Author(id="assistant", name="Assistant", role="assistant")
FINISH_RETRY_SECONDS = 30.0
"""How long a finished reply keeps trying to reach a broker that is down before it is given up."""


def final_reply(
    channel: str, reply: str, text: str, reason: StopReason, usage: Usage | None = None
) -> Done:
    """The ``done`` of a reply (its id is set by the store), rendered once."""
    return Done(
        channel=channel,
        reply=reply,
        id="0-0",
        text=text,
        html=render_markdown(text),
        stop_reason=reason,
        author=ASSISTANT,
        ts=now_ms(),
        usage=usage,
    )


def new_reply_id() -> str:
    """A fresh reply id."""
    return "r" + secrets.token_hex(8)


class _Stopped(Exception):
    """The reply's generator was cancelled by ``stop``."""


ReplyListener = Callable[[str | Done | Error], None]
"""Local observer of one reply (the HTTP streaming API): pieces, then the final Done, or an Error."""


@dataclass(slots=True)
class _Reply:
    reply: str
    channel: str
    upto: str = ""
    """Id of the message the reply answers: its context is the log up to there."""
    pieces: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unsent: list[tuple[int, str]] = field(default_factory=list)
    """Deltas the broker did not take (down), sent first and in order once it answers: the
    head may have been tried, new text joins an untried tail, so at most two wait."""
    seq: int = 0
    held_logged: int = -1
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    lost: bool = False
    """Another worker owns the reply now (this one was frozen or cut off): end without a word."""
    taken_over: bool = False
    begun: bool = False
    """Already recorded in flight (with its question, or by the worker it is taken over from)."""
    lost_at_ms: int = 0
    """When a taken-over reply's first worker was last heard (for the takeover latency)."""
    generator: asyncio.Task[Finish] | None = None
    task: asyncio.Task[None] | None = None
    listeners: list[ReplyListener] = field(default_factory=list)


class AssistantRunner:
    """Runs replies on this worker; any worker can ask it (through the broker) to stop one."""

    def __init__(
        self, settings: Settings, broker: Broker, llm: LLM, worker: str, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.llm = llm
        self.worker = worker
        self.metrics = metrics
        self.running: dict[str, _Reply] = {}

    def start(
        self,
        channel: str,
        *,
        upto: str = "",
        reply: str | None = None,
        listener: ReplyListener | None = None,
    ) -> str:
        """Begin a reply to message ``upto`` of ``channel``; returns the reply id at once.
        With ``reply``, the reply was recorded in flight already (with its question)."""
        state = _Reply(reply=reply or new_reply_id(), channel=channel, upto=upto)
        state.begun = reply is not None
        if listener is not None:
            state.listeners.append(listener)
        self._launch(state)
        return state.reply

    def take_over(self, claimed: InflightReply, lost_at_ms: int) -> None:
        """Continue a reply this worker claimed from a dead one, under its id, at its next seq."""
        try:
            upto = str(json.loads(claimed.meta).get("upto", ""))
        except (ValueError, AttributeError):
            upto = ""
        state = _Reply(
            reply=claimed.reply,
            channel=claimed.channel,
            upto=upto,
            pieces=list(claimed.deltas),
            seq=len(claimed.deltas),
            taken_over=True,
            begun=True,
            lost_at_ms=lost_at_ms,
        )
        self._launch(state)

    def _launch(self, state: _Reply) -> None:
        self.running[state.reply] = state
        state.task = asyncio.create_task(self._run(state), name=f"reply-{state.reply}")

    def stop(self, reply: str) -> bool:
        """Stop a reply running here; its partial text is kept with ``stop_reason: stopped``."""
        state = self.running.get(reply)
        if state is None:
            return False
        state.stopped = True
        if state.generator is not None:
            state.generator.cancel()
        return True

    async def wait_idle(self, timeout: float) -> None:
        """Let running replies finish on their own for up to ``timeout`` seconds (drain)."""
        tasks = [s.task for s in self.running.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def shutdown(self, *, hand_over: bool = False) -> None:
        """End what still runs: stored as ``interrupted``, or with ``hand_over`` left in flight
        for another worker to take over (this worker then says it is gone)."""
        states = list(self.running.values())
        for state in states:
            state.lost = hand_over
            if state.task is not None:
                state.task.cancel()
        for state in states:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                if state.task is not None:
                    await state.task

    async def _run(self, state: _Reply) -> None:
        started = time.monotonic()
        reason: StopReason = "end"
        usage: Usage | None = None
        failure: LLMError | None = None
        try:
            if not state.begun:
                meta = json.dumps({"started": now_ms(), "upto": state.upto})
                await self.broker.reply_begin(state.channel, state.reply, self.worker, meta)
            request = await build_request(
                self.broker,
                state.channel,
                self.settings.context_messages,
                state.upto,
                "".join(state.pieces),
            )
            state.generator = asyncio.create_task(self._generate(state, request))
            if state.stopped:
                state.generator.cancel()
            await self._flush_loop(state)
            finish = state.generator.result()
            reason, usage = finish.stop_reason, finish.usage
        except _Stopped:
            reason = "stopped"
        except ReplyLost:
            state.lost = True
            log.info("reply %s is another worker's now; this one lets go", state.reply)
        except asyncio.CancelledError:
            reason = "interrupted"
            if state.generator is not None:
                state.generator.cancel()
            raise
        except LLMError as exc:
            failure, reason = exc, "interrupted" if state.taken_over else "error"
        except BrokerError as exc:
            log.warning("reply %s could not start: %s", state.reply, exc)
            failure, reason = LLMError("unavailable", UNAVAILABLE), "error"
        except Exception:
            log.exception("reply %s failed", state.reply)
            failure = LLMError("internal", "The assistant failed unexpectedly; try again.")
            reason = "error"
        finally:
            if state.generator is not None and not state.generator.done():
                state.generator.cancel()
            if not state.lost:
                await asyncio.shield(self._finish(state, reason, usage, failure))
                self.metrics.reply_seconds.observe(time.monotonic() - started)
                self.metrics.replies.labels(reason).inc()
            self.running.pop(state.reply, None)

    async def _generate(self, state: _Reply, request: LLMRequest) -> Finish:
        stream = self.llm.stream(request)
        try:
            async for item in stream:
                if isinstance(item, Finish):
                    return item
                state.pending.append(item)
                state.wake.set()
        finally:
            await stream.aclose()
            state.wake.set()
        return Finish("end")

    async def _flush_loop(self, state: _Reply) -> None:
        """First piece at once, then at most one delta per ``delta_interval``."""
        generator = state.generator
        assert generator is not None
        while True:
            waiter = asyncio.create_task(state.wake.wait())
            try:
                await asyncio.wait({generator, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            state.wake.clear()
            if state.pending:
                await self._flush(state)
            if generator.done():
                # Pieces that came while the last delta was being published go out too.
                if state.pending:
                    await self._flush(state)
                if generator.cancelled():
                    raise _Stopped
                exc = generator.exception()
                if exc is not None:
                    raise exc
                return
            await asyncio.sleep(self.settings.delta_interval)

    async def _flush(self, state: _Reply) -> None:
        text = "".join(state.pending)
        state.pending.clear()
        state.pieces.append(text)
        for listener in state.listeners:
            listener(text)
        if len(state.unsent) == 2:
            seq, held = state.unsent[1]
            state.unsent[1] = (seq, held + text)
        else:
            state.unsent.append((state.seq, text))
            state.seq += 1
        await self._publish_unsent(state)

    async def _publish_unsent(self, state: _Reply) -> bool:
        """Publish held deltas in order; False (they stay held, no seq gap) while the broker
        is down. ``ReplyLost`` when another worker owns the reply now."""
        while state.unsent:
            seq, text = state.unsent[0]
            payload = encode(Delta(channel=state.channel, reply=state.reply, seq=seq, text=text))
            frame = Envelope(Kind.DELTA, payload, reply=state.reply, seq=seq)
            try:
                await self.broker.reply_delta(state.channel, state.reply, self.worker, text, frame)
            except BrokerError as exc:
                if state.held_logged != seq:  # once per held delta, not once per retry
                    state.held_logged = seq
                    log.warning(
                        "delta %d of %s held until the broker answers: %s", seq, state.reply, exc
                    )
                return False
            state.unsent.pop(0)
            self.metrics.deltas.inc()
            if state.lost_at_ms:
                self.metrics.takeover_seconds.observe(
                    max(0.0, (now_ms() - state.lost_at_ms) / 1000)
                )
                state.lost_at_ms = 0
        return True

    async def _finish(
        self, state: _Reply, reason: StopReason, usage: Usage | None, failure: LLMError | None
    ) -> None:
        if state.pending:
            state.pieces.append("".join(state.pending))
            state.pending.clear()
        text = "".join(state.pieces)
        done = final_reply(state.channel, state.reply, text, reason, usage)
        if state.taken_over:
            done = done.model_copy(update={"taken_over": True})
        if failure is not None:
            log.warning("reply %s ended with %s: %s", state.reply, failure.code, failure.message)
            error = Error(
                code=failure.code,
                message=failure.message,
                retry_after=failure.retry_after,
                channel=state.channel,
                reply=state.reply,
            )
            await self._publish_error(state.channel, error)
            for listener in state.listeners:
                listener(error)
        stored = await self._store(state, entry_body(done))
        if stored is not None:
            done = done.model_copy(update={"id": stored})
        for listener in state.listeners:
            listener(done)

    async def _store(self, state: _Reply, body: str) -> str | None:
        """Store the final message, retrying (bounded) while the broker is unreachable."""
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                if not await self._publish_unsent(state):
                    raise BrokerError("the held delta could not be published")
                result = await self.broker.append(
                    state.channel,
                    body,
                    publish_as="done",
                    finish_reply=state.reply,
                    owner=self.worker,
                )
                if result is None:
                    return None
                with contextlib.suppress(BrokerError):
                    await self.broker.reply_end(state.reply, state.channel, self.worker)
                return result.id
            except ReplyLost:
                return None
            except BrokerError as exc:
                if time.monotonic() + delay > deadline:
                    log.error(
                        "reply %s lost: broker unreachable for %ss (%s)",
                        state.reply,
                        FINISH_RETRY_SECONDS,
                        exc,
                    )
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _publish_error(self, channel: str, error: Error) -> None:
        with contextlib.suppress(BrokerError):
            await self.broker.publish(channel, Envelope(Kind.EVENT, encode(error)))

    async def finish_orphan(self, claimed: InflightReply) -> None:
        """Close a claimed reply without continuing it: what it streamed, as ``interrupted``."""
        text = "".join(claimed.deltas)
        done = final_reply(claimed.channel, claimed.reply, text, "interrupted")
        done = done.model_copy(update={"taken_over": True})
        with contextlib.suppress(BrokerError):
            result = await self.broker.append(
                claimed.channel,
                entry_body(done),
                publish_as="done",
                finish_reply=claimed.reply,
                owner=self.worker,
            )
            if result is not None:
                await self.broker.reply_end(claimed.reply, claimed.channel, self.worker)
                self.metrics.replies.labels("interrupted").inc()
                log.info("reply %s of a dead worker closed as interrupted", claimed.reply)
