"""Reading the answer to one request off a test client, whatever else arrives meanwhile."""

from __future__ import annotations

from typing import Any

from tests.support.wsclient import WsClient


async def answer(
    client: WsClient, ref: str, types: tuple[str, ...] = ("ack", "error")
) -> dict[str, Any]:
    """The first frame of one of ``types`` that answers ``ref``; fails after 5 s of silence."""
    while True:
        for frame in client.received:
            if frame.get("ref") == ref and frame["type"] in types:
                return frame
        try:
            await client._next(5.0)
        except TimeoutError:
            raise AssertionError(f"no answer to {ref} within 5 s") from None
