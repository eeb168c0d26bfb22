"""Continuing a partial reply (a takeover): what providers ask, and how the pieces join."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from hub.llm.base import Finish

CONTINUE_PROMPT = (
    "Your reply above was cut off. Continue it exactly where it stops, without repeating "
    "any of it and without any preface."
)
"""Asked in a user turn where a model refuses a prefilled final assistant turn."""


class PrefillRefused(Exception):
    """The model does not accept a prefilled final assistant turn."""


class Joiner:
    """Joins a continuation to a partial reply that was sent trimmed of trailing whitespace
    (the Messages API refuses a final assistant turn ending in it): the model may start with
    whitespace the client already has, so leading whitespace is dropped once."""

    def __init__(self, partial: str) -> None:
        self._trimmed = partial != partial.rstrip()

    async def __call__(
        self, stream: AsyncGenerator[str | Finish, None]
    ) -> AsyncGenerator[str | Finish, None]:
        """The stream's items, the continuation's leading whitespace dropped where it repeats."""
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, str) and self._trimmed:
                    item = item.lstrip()
                    if not item:
                        continue
                    self._trimmed = False
                yield item
