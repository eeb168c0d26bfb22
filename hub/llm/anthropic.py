"""Claude through the ``anthropic`` SDK: streamed replies, prompt caching, bounded retries.

Failures and what the user gets (``LLMError.code``):

* 429, 529 and other 5xx, and timeouts before the reply starts, are retried by the SDK
  (``HUB_LLM_MAX_RETRIES`` times, honouring ``retry-after`` up to :data:`MAX_RETRY_WAIT`
  seconds), then ``llm_unavailable`` with ``retry_after`` from the last ``retry-after``.
  A ``retry-after`` longer than :data:`MAX_RETRY_WAIT` ends the reply at once instead of
  keeping the user waiting.
* A 429/402 that retrying cannot cure (spend limit reached, billing error) fails at once:
  ``llm_unavailable``, plus an operator log line.
* 401/403/404 (key refused, key not allowed, model unknown): ``llm_unavailable`` and a
  ``logging.error`` telling the operator what to fix. Nothing is remembered: every
  request tries again, so a key that is refused for a while recovers by itself.
* An ``error`` event inside the stream: ``llm_error``, after the text already yielded.
* A stream that stalls (no bytes and no pings for ``HUB_LLM_READ_TIMEOUT`` seconds) or
  whose connection drops: ``llm_unavailable`` -- like a timeout before the reply, it is the
  service not answering, and asking again later is the remedy. The hub keeps the partial
  text either way.
* A request the API rejects (400, 413): ``llm_error`` with the API's explanation.

Stop: closing this generator (``aclose``) or cancelling the task awaiting it leaves the
SDK's ``async with`` block, which closes the HTTP response at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
from anthropic import APIRequest, AsyncAnthropic, AsyncAPIResponse, AsyncCallNext, Middleware
from anthropic.types import (
    AssistantMessageParam,
    MessageParam,
    TextBlockParam,
    UserMessageParam,
)

from hub.llm.base import Finish, LLMError, LLMRequest
from hub.llm.context import Context, build_context
from hub.llm.continuation import CONTINUE_PROMPT, Joiner, PrefillRefused
from hub.llm.errors import (
    Service,
    broke_off_error,
    busy_error,
    parse_retry_after,
    spend_limit_error,
    stalled_error,
    status_error,
    stream_error,
    timed_out_error,
    unreachable_error,
)
from hub.protocol import StopReason, Usage

if TYPE_CHECKING:
    from hub.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_WAIT = 10.0
"""Longest ``retry-after`` (s) worth waiting for inside one reply; beyond it, fail at once."""

CONNECT_TIMEOUT = 10.0
"""Longest wait (s) for a TCP/TLS connection, capped by ``HUB_LLM_TIMEOUT``."""

SPEND_LIMIT_CODES = frozenset(
    {
        "contract_spend_limit_reached",
        "enforced_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
"""``error.details.error_code`` values of a 402/429 that waiting will not cure."""

_STOP_REASONS: dict[str, StopReason] = {
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
}

NO_CREDENTIALS = (
    "The assistant is not available: the server has no API key for it. The operator has been told."
)
NO_CREDENTIALS_LOG = (
    "HUB_LLM=anthropic but the anthropic SDK found no credentials: set ANTHROPIC_API_KEY "
    "(or ANTHROPIC_AUTH_TOKEN / ANTHROPIC_PROFILE) and restart the hub"
)

DECLINED = "(The assistant declined to answer this.)"
"""The reply to a refusal that came without any text, so the stored reply is not empty."""


class GiveUp(Exception):
    """Raised by the retry policy to end the SDK's retries early; not an SDK error on purpose."""

    def __init__(self, error: LLMError) -> None:
        super().__init__(error.message)
        self.error = error


def error_fields(body: object) -> tuple[str, str, str]:
    """``(type, message, details.error_code)`` of an API error body, empty where absent."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return "", "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", "", ""
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return (
        str(error.get("type") or ""),
        str(error.get("message") or ""),
        str(code or ""),
    )


def is_spend_limit(status: int, body: object) -> bool:
    """A 402/429 that no amount of retrying fixes: the account may not spend more."""
    etype, _, code = error_fields(body)
    return status in (402, 429) and (
        status == 402 or etype == "billing_error" or code in SPEND_LIMIT_CODES
    )


class RetryPolicy(Middleware):
    """Cut the SDK's retries short where waiting cannot help or would take too long."""

    def __init__(self, max_wait: float = MAX_RETRY_WAIT) -> None:
        self.max_wait = max_wait

    async def handle_async(
        self, request: APIRequest, call_next: AsyncCallNext
    ) -> AsyncAPIResponse[Any]:
        response = await call_next(request)
        status = response.status_code
        if status not in (402, 429) and status < 500:
            return response
        http = response.http_response
        await http.aread()
        if is_spend_limit(status, http.content):
            _, message, _ = error_fields(http.content)
            raise GiveUp(spend_limit_error("Anthropic", message))
        wait = parse_retry_after(http.headers)
        if wait is not None and wait > self.max_wait:
            raise GiveUp(busy_error(wait))
        return response


class AnthropicLLM:
    """Streams Claude's replies; one instance (and one HTTP connection pool) per worker."""

    name = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        system_prompt: str,
        max_tokens: int,
        temperature: float | None = None,
        timeout: float = 60.0,
        read_timeout: float = 30.0,
        max_retries: int = 2,
        context_tokens: int = 50_000,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.context_tokens = context_tokens
        self.read_timeout = read_timeout
        timeouts = httpx2.Timeout(timeout, read=read_timeout, connect=min(timeout, CONNECT_TIMEOUT))
        options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeouts,
            "max_retries": max_retries,
            "middleware": [RetryPolicy(max_retry_wait)],
        }
        try:
            # api_key None: the SDK finds ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, profiles...
            self.client = AsyncAnthropic(api_key=api_key, **options)
            client = self.client
            self.has_credentials = bool(client.api_key or client.auth_token or client.credentials)
        except anthropic.CredentialsError as exc:
            log.error("the anthropic SDK could not load credentials: %s", exc)
            # A client that never sends a request, so the hub still starts and says why.
            self.client = AsyncAnthropic(api_key="", **options)
            self.has_credentials = False
        if not self.has_credentials:
            log.error(NO_CREDENTIALS_LOG)

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicLLM:
        """The provider configured by ``HUB_*`` settings and the SDK's own environment."""
        return cls(
            model=settings.anthropic_model,
            system_prompt=settings.system_prompt,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            timeout=settings.llm_timeout,
            read_timeout=settings.llm_read_timeout,
            max_retries=settings.llm_max_retries,
            context_tokens=settings.context_tokens,
        )

    def render(self, context: Context) -> tuple[list[TextBlockParam], list[MessageParam]]:
        """System blocks and messages; cache breakpoints on the system and the stable prefix."""
        system: list[TextBlockParam] = []
        if context.system:
            # The API refuses empty text blocks, so an empty prompt sends no system at all.
            system.append(
                {"type": "text", "text": context.system, "cache_control": {"type": "ephemeral"}}
            )
        messages: list[MessageParam] = []
        for index, message in enumerate(context.messages):
            blocks: list[TextBlockParam] = [{"type": "text", "text": p} for p in message.parts]
            if index == context.stable_prefix - 1:
                blocks[-1]["cache_control"] = {"type": "ephemeral"}
            if message.role == "user":
                messages.append(UserMessageParam(role="user", content=blocks))
            else:
                messages.append(AssistantMessageParam(role="assistant", content=blocks))
        return system, messages

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str | Finish, None]:
        """Yield Claude's text as it arrives, then a ``Finish`` with the token usage.

        With ``request.partial`` (a takeover), the partial reply goes last as a prefilled
        assistant turn, so the model continues it; where the model refuses a prefill, it is
        asked in a user turn to continue the text instead. Only the continuation is yielded.
        """
        if not self.has_credentials:
            log.error(NO_CREDENTIALS_LOG)
            raise LLMError("llm_unavailable", NO_CREDENTIALS)
        context = build_context(request, self.system_prompt, self.context_tokens)
        if context.dropped:
            log.debug("%s: %d old turns left out of the context", request.channel, context.dropped)
        system, messages = self.render(context)
        prefill = request.partial.rstrip()
        if not prefill:
            async with contextlib.aclosing(
                self._stream(request.channel, system, messages)
            ) as items:
                async for item in items:
                    yield item
            return
        join = Joiner(request.partial)
        prefilled = [*messages, AssistantMessageParam(role="assistant", content=prefill)]
        try:
            log.info("%s: continuing a reply with a prefilled assistant turn", request.channel)
            first = self._stream(request.channel, system, prefilled, prefill=True)
            async with contextlib.aclosing(join(first)) as items:
                async for item in items:
                    yield item
            return
        except PrefillRefused:
            log.info(
                "%s: %s refuses a prefilled turn; asking it to continue the text instead",
                request.channel,
                self.model,
            )
        asked = [*prefilled, UserMessageParam(role="user", content=CONTINUE_PROMPT)]
        async with contextlib.aclosing(join(self._stream(request.channel, system, asked))) as items:
            async for item in items:
                yield item

    async def _stream(
        self,
        channel: str,
        system: list[TextBlockParam],
        messages: list[MessageParam],
        *,
        prefill: bool = False,
    ) -> AsyncGenerator[str | Finish, None]:
        """One streamed request; ``PrefillRefused`` when ``prefill`` and the API refuses it."""
        usage: dict[str, int] = {}
        stop: StopReason = "end"
        api_stop = ""
        produced = False
        streaming = False
        # The SDK (1.0+) dropped the sampling arguments; the API still takes them in the body.
        extra = {"temperature": self.temperature} if self.temperature is not None else None
        try:
            async with self.client.messages.stream(
                model=self.model,
                max_tokens=self.max_tokens,
                system=system or anthropic.omit,
                messages=messages,
                extra_body=extra,
            ) as events:
                streaming = True
                async for event in events:
                    if event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            produced = True
                            yield event.delta.text
                    elif event.type == "message_start":
                        add_usage(usage, event.message.usage)
                    elif event.type == "message_delta":
                        add_usage(usage, event.usage)
                        if event.delta.stop_reason:
                            api_stop = event.delta.stop_reason
                            stop = _STOP_REASONS.get(api_stop, "end")
        except GiveUp as exc:
            raise exc.error from None
        except anthropic.AnthropicError as exc:
            if prefill and not streaming and self.refuses_prefill(exc):
                raise PrefillRefused from exc
            raise self.map_error(exc, streaming) from exc
        except httpx2.TimeoutException as exc:
            log.warning("%s: the Anthropic stream stalled: %r", channel, exc)
            raise stalled_error(self.read_timeout) from exc
        except httpx2.HTTPError as exc:
            log.warning("%s: the Anthropic stream broke off: %r", channel, exc)
            raise broke_off_error() from exc
        if api_stop == "refusal" and not produced:
            yield DECLINED
        result = Usage(**usage)
        log.info(
            "%s: reply done (%s, %s): input %d, output %d, cache read %d, cache write %d",
            channel,
            self.model,
            stop,
            result.input_tokens,
            result.output_tokens,
            result.cache_read_input_tokens,
            result.cache_creation_input_tokens,
        )
        yield Finish(stop, usage=result)

    @staticmethod
    def refuses_prefill(exc: anthropic.AnthropicError) -> bool:
        """A 400 saying the model takes no prefill (the conversation must end with the user)."""
        if not isinstance(exc, anthropic.APIStatusError) or exc.status_code != 400:
            return False
        _, message, _ = error_fields(exc.body)
        return "prefill" in (exc.api_message or message).lower()

    def map_error(self, exc: anthropic.AnthropicError, streaming: bool) -> LLMError:
        """One sentence a user can act on for each SDK failure; operator problems are logged."""
        if isinstance(exc, anthropic.APIStatusError):
            etype, message, _ = error_fields(exc.body)
            message = exc.api_message or message
            if streaming:
                log.warning("Anthropic stream error event: %s: %s", etype or "?", message)
                return stream_error(etype or "api_error")
            retry_after = parse_retry_after(exc.response.headers)
            if is_spend_limit(exc.status_code, exc.body):
                return spend_limit_error("Anthropic", message)
            service = Service(
                "Anthropic",
                "ANTHROPIC_API_KEY",
                f"is HUB_ANTHROPIC_MODEL={self.model!r} a current model?",
            )
            return status_error(service, exc.status_code, message, etype, retry_after)
        if isinstance(exc, anthropic.APITimeoutError):
            return timed_out_error()
        if isinstance(exc, anthropic.APIConnectionError):
            log.warning("cannot reach the Anthropic API: %s", exc.__cause__ or exc)
            return unreachable_error()
        log.error("Anthropic client failure: %s", exc)
        return LLMError(
            "llm_unavailable",
            "The assistant is not available: the server cannot use its Anthropic account. "
            "The operator has been told.",
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.close()


def add_usage(total: dict[str, int], usage: object) -> None:
    """Fold a ``message_start`` or ``message_delta`` usage into the reply's totals."""
    for field in Usage.model_fields:
        value = getattr(usage, field, None)
        if isinstance(value, int):
            total[field] = value
