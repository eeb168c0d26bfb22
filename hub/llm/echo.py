"""The offline assistant: repeats the last message word by word, with no account and no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from hub.llm.base import Finish, LLMRequest


class EchoLLM:
    """Deterministic replies (``Echo: <text>``) streamed one word at a time."""

    name = "echo"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str | Finish, None]:
        last = request.turns[-1].text if request.turns else ""
        last = re.sub(r"@assistant\b", "", last).strip()
        for piece in re.findall(r"\S+\s*", f"Echo: {last}"):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield piece
        yield Finish("end")

    async def aclose(self) -> None:
        return None
