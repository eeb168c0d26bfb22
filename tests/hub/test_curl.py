"""curl, the client the README shows: ``curl -N`` streams /api/chat and /api/events as they come."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.conftest import HubUnderTest

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def _curl(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "curl", "-sS", "-N", "--max-time", "20", *args, stdout=asyncio.subprocess.PIPE
    )


async def _lines_until(proc: asyncio.subprocess.Process, text: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while text not in "".join(lines):
            line = await proc.stdout.readline()
            assert line, f"curl ended before {text!r}: {lines}"
            lines.append(line.decode())
    return lines


async def test_curl_streams_a_chat_reply(hub: HubUnderTest) -> None:
    auth = f"Authorization: Bearer {hub.token('ann')}"
    proc = await _curl(
        f"{hub.url}/api/chat", "-H", auth, "-d", '{"text":"from curl","stream":true}'
    )
    lines = await _lines_until(proc, "data: [DONE]")
    pieces = [line for line in lines if line.startswith('data: {"content"')]
    assert len(pieces) >= 2  # more than one piece: it streamed
    assert await proc.wait() == 0


async def test_curl_follows_the_event_stream(hub: HubUnderTest) -> None:
    auth = f"Authorization: Bearer {hub.token('ann')}"
    proc = await _curl(f"{hub.url}/api/events", "-H", auth)
    try:
        await _lines_until(proc, "event: welcome")
        tab = await hub.connect("ann")
        await tab.send(type="send", text="seen by curl", ref="c")
        lines = await _lines_until(proc, "event: done")
    finally:
        proc.kill()
        await proc.wait()
    assert any(line.startswith("event: delta") for line in lines)
    assert any('"seen by curl"' in line for line in lines)
    assert sum(line.startswith("id: ") for line in lines) == sum(
        line.startswith("event: ") for line in lines
    )
