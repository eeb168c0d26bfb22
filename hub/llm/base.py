"""The assistant contract: stream text pieces for a conversation, cancellable at any await."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from hub.errors import ErrorCode, HubError
from hub.protocol import StopReason, Usage


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation as the assistant should see it."""

    role: Literal["user", "assistant"]
    text: str
    author: str = ""
    """Display name of a user turn's author; providers attribute room turns with it."""


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """Everything a provider needs for one reply; ``turns`` is oldest first and ends with a user turn."""

    channel: str
    turns: list[Turn]
    room: bool = False
    members: list[str] = field(default_factory=list)
    partial: str = ""
    """The reply so far, when a worker takes over a reply whose worker died: the provider
    continues it and yields only the continuation."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The last item a stream yields: why it ended and what it cost."""

    stop_reason: StopReason = "end"
    usage: Usage | None = None


class LLMError(HubError):
    """A reply could not be produced or continued; ``code`` goes to the user as an error code."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(code, message, retry_after=retry_after)


class LLM(Protocol):
    """A provider of assistant replies (``echo``, ``anthropic``, ``openai``)."""

    name: str

    def stream(self, request: LLMRequest) -> AsyncGenerator[str | Finish, None]:
        """Yield text pieces, then one ``Finish``; raise ``LLMError`` on failure.

        Closing the iterator early (``aclose``, cancellation) must end the upstream request.
        """
        ...

    async def aclose(self) -> None:
        """Release HTTP clients on shutdown."""
        ...
