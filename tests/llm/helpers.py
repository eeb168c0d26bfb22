"""Helpers shared by the provider tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hub.llm.base import Finish, LLMError, LLMRequest, Turn


class Outcome:
    """What one stream produced: the pieces, then a Finish or an LLMError."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish: Finish | None = None
        self.error: LLMError | None = None

    @property
    def text(self) -> str:
        """The assembled reply."""
        return "".join(self.pieces)


async def collect(stream: AsyncIterator[str | Finish]) -> Outcome:
    """Drain a provider stream, keeping the error instead of raising it."""
    outcome = Outcome()
    try:
        async for item in stream:
            if isinstance(item, Finish):
                assert outcome.finish is None, "two Finish items"
                outcome.finish = item
            else:
                assert outcome.finish is None, "text after Finish"
                outcome.pieces.append(item)
    except LLMError as exc:
        outcome.error = exc
    return outcome


def dm(*texts: str) -> LLMRequest:
    """A dm conversation alternating user/assistant, starting and ending with the user."""
    turns = [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    return LLMRequest(channel="dm:alice", turns=turns)
