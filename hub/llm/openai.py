"""Any OpenAI-compatible chat API (llama.cpp, vLLM, Ollama, hosted ones) through the ``openai`` SDK.

The ``openai`` package is an optional extra (``pip install 'chat-hub[openai]'``); it is
imported only when this provider is built, and its absence is reported in one sentence.

Same behaviour as the Anthropic provider (see ``hub.llm.anthropic``): the SDK retries
429/5xx/timeouts ``HUB_LLM_MAX_RETRIES`` times honouring ``retry-after`` up to
``MAX_RETRY_WAIT``, then ``llm_unavailable``; a 429 ``insufficient_quota`` fails at once;
a refused key is ``llm_unavailable`` plus an operator log line; an error inside the stream
is ``llm_error`` after the text already yielded; a stalled stream is ``llm_unavailable``
after ``HUB_LLM_READ_TIMEOUT``. Closing the generator closes the HTTP response.

The request uses ``max_tokens`` (what llama.cpp, vLLM and Ollama understand) and asks for
usage in the last chunk (``stream_options.include_usage``). ``prompt_tokens`` counts cached
tokens too; they are reported as ``cache_read_input_tokens`` and left out of
``input_tokens``, as the Anthropic API counts them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import httpx2

from hub.llm.anthropic import CONNECT_TIMEOUT, MAX_RETRY_WAIT
from hub.llm.base import Finish, LLMError, LLMRequest
from hub.llm.context import Context, build_context
from hub.llm.continuation import CONTINUE_PROMPT, Joiner
from hub.llm.errors import (
    Service,
    broke_off_error,
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
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    from hub.settings import Settings

log = logging.getLogger(__name__)

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
"""Error codes of a 429 that waiting will not cure."""

MISSING_EXTRA = (
    "HUB_LLM=openai needs the 'openai' package, an optional extra: "
    "pip install 'chat-hub[openai]' (or pip install openai)."
)


def error_info(body: object) -> tuple[str, str]:
    """``(code or type, message)`` of an OpenAI-style error body (whole or its ``error``)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return "", ""
    code = body.get("code") or body.get("type") or ""
    return str(code), str(body.get("message") or "")


class ClearRetryHook:
    """Stops the SDK retrying quota errors and long ``retry-after``s (``x-should-retry``)."""

    # The openai SDK has no retry middleware; an httpx response hook is the place left.

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait

    async def __call__(self, response: httpx2.Response) -> None:
        if response.status_code != 429 and response.status_code < 500:
            return
        await response.aread()
        try:
            body: object = response.json()
        except ValueError:
            body = None
        code, _ = error_info(body)
        wait = parse_retry_after(response.headers)
        if code in QUOTA_CODES or (wait is not None and wait > self.max_wait):
            response.headers["x-should-retry"] = "false"


class OpenAILLM:
    """Streams replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        system_prompt: str,
        max_tokens: int,
        api_key: str | None = None,
        temperature: float | None = None,
        timeout: float = 60.0,
        read_timeout: float = 30.0,
        max_retries: int = 2,
        context_tokens: int = 50_000,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise RuntimeError(MISSING_EXTRA) from None
        self.model = model
        self.base_url = base_url
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.context_tokens = context_tokens
        self.read_timeout = read_timeout
        self.max_retry_wait = max_retry_wait
        # Local servers want no key, but the SDK insists on one: a placeholder does.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            timeout=httpx2.Timeout(
                timeout, read=read_timeout, connect=min(timeout, CONNECT_TIMEOUT)
            ),
            max_retries=max_retries,
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"response": [ClearRetryHook(max_retry_wait)]}
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAILLM:
        """The provider configured by ``HUB_OPENAI_*`` and the shared LLM settings."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            system_prompt=settings.system_prompt,
            max_tokens=settings.max_tokens,
            api_key=key,
            temperature=settings.temperature,
            timeout=settings.llm_timeout,
            read_timeout=settings.llm_read_timeout,
            max_retries=settings.llm_max_retries,
            context_tokens=settings.context_tokens,
        )

    def render(self, context: Context) -> list[ChatCompletionMessageParam]:
        """The chat messages: the system prompt first, then one string per message."""
        messages: list[ChatCompletionMessageParam] = []
        if context.system:
            messages.append({"role": "system", "content": context.system})
        for message in context.messages:
            if message.role == "user":
                messages.append({"role": "user", "content": message.text})
            else:
                messages.append({"role": "assistant", "content": message.text})
        return messages

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str | Finish, None]:
        """Yield the model's text as it arrives, then a ``Finish`` with the token usage.

        With ``request.partial`` (a takeover) the partial reply goes as an assistant turn and
        a user turn asks to continue it: chat APIs differ on a final assistant turn, this
        shape every one of them takes. Only the continuation is yielded.
        """
        context = build_context(request, self.system_prompt, self.context_tokens)
        messages = self.render(context)
        partial = request.partial.rstrip()
        if partial:
            log.info("%s: continuing a reply (asked in a user turn)", request.channel)
            messages.append({"role": "assistant", "content": partial})
            messages.append({"role": "user", "content": CONTINUE_PROMPT})
        stream = self._stream(request.channel, messages)
        async with contextlib.aclosing(Joiner(request.partial)(stream)) as items:
            async for item in items:
                yield item

    async def _stream(
        self, channel: str, messages: list[ChatCompletionMessageParam]
    ) -> AsyncGenerator[str | Finish, None]:
        import openai

        usage = Usage()
        stop: StopReason = "end"
        streaming = False
        try:
            chunks = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=openai.omit if self.temperature is None else self.temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with chunks:
                streaming = True
                async for chunk in chunks:
                    if chunk.usage is not None:
                        details = chunk.usage.prompt_tokens_details
                        cached = (details.cached_tokens or 0) if details else 0
                        usage = Usage(
                            input_tokens=max(0, chunk.usage.prompt_tokens - cached),
                            output_tokens=chunk.usage.completion_tokens,
                            cache_read_input_tokens=cached,
                        )
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content
                        if choice.finish_reason == "length":
                            stop = "max_tokens"
        except openai.OpenAIError as exc:
            raise self.map_error(exc, streaming) from exc
        log.info(
            "%s: reply done (%s, %s): input %d, output %d, cache read %d",
            channel,
            self.model,
            stop,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
        )
        yield Finish(stop, usage=usage)

    def map_error(self, exc: openai.OpenAIError, streaming: bool) -> LLMError:
        """One sentence a user can act on for each SDK failure; operator problems are logged."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            if streaming:
                log.warning("the stream from %s stalled", self.base_url)
                return stalled_error(self.read_timeout)
            return timed_out_error()
        if isinstance(exc, openai.APIConnectionError):
            log.warning("cannot reach the model server at %s: %s", self.base_url, exc.__cause__)
            return broke_off_error() if streaming else unreachable_error()
        if isinstance(exc, openai.APIStatusError):
            code, message = error_info(exc.body)
            if exc.status_code == 429 and code in QUOTA_CODES:
                return spend_limit_error(f"The model server at {self.base_url}", message)
            service = Service(
                f"The model server at {self.base_url}",
                "HUB_OPENAI_API_KEY",
                f"check HUB_OPENAI_BASE_URL and HUB_OPENAI_MODEL={self.model!r}",
            )
            retry_after = parse_retry_after(exc.response.headers)
            return status_error(service, exc.status_code, message, code, retry_after)
        if isinstance(exc, openai.APIError):
            code, message = error_info(exc.body)
            log.warning("error inside the stream from %s: %s %s", self.base_url, code, message)
            return stream_error(code or "server_error")
        log.error("OpenAI client failure: %s", exc)
        return LLMError(
            "llm_unavailable",
            "The assistant is not available: the server cannot use its model. "
            "The operator has been told.",
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.close()
