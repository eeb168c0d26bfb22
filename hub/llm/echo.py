"""The offline assistant: repeats the last message word by word, with no account and no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from hub.llm.base import Finish, LLMError, LLMRequest


class EchoLLM:
    """Deterministic replies (``Echo: <text>``) streamed one word at a time."""

    name = "echo"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str | Finish, None]:
        """The whole echo, or with ``request.partial`` (a takeover) the rest of it after the
        part already streamed, continuing from the next word."""
        last = request.turns[-1].text if request.turns else ""
        last = re.sub(r"@assistant\b", "", last).strip()
        text = f"Echo: {last}"
        if not text.startswith(request.partial):
            raise LLMError("llm_error", "The echo cannot continue a reply to another message.")
        for piece in re.findall(r"\S+\s*|^\s+", text[len(request.partial) :]):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield piece
        yield Finish("end")

    async def aclose(self) -> None:
        return None
