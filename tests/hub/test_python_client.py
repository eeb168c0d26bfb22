"""The Python client: survives drops mid-reply, resumes, shows each frame once, retries sends."""

from __future__ import annotations

from typing import Any

import pytest

from hub.client import HubClient, HubClientError
from hub.web.keys import HUB
from tests.conftest import HubFactory, HubUnderTest


async def _until_done(client: HubClient, limit: int = 500) -> list[dict[str, Any]]:
    frames = []
    for _ in range(limit):
        frame = await client.next_frame(10)
        frames.append(frame)
        if frame["type"] == "done":
            return frames
    raise AssertionError("no done")


async def test_client_chats_and_resumes_after_a_4008_mid_reply(start_hub: HubFactory) -> None:
    hub = await start_hub(echo_delay=0.02)
    async with HubClient(hub.url, hub.token("ann")) as client:
        text = " ".join(f"w{i}" for i in range(40))
        await client.send(text)
        first = await client.next_frame()
        while first["type"] != "delta":
            first = await client.next_frame()
        for conn in hub.app[HUB].registry.all():
            conn.close(4008, "too slow")
        frames = [first, *await _until_done(client)]
        deltas = [f for f in frames if f["type"] == "delta"]
        done = frames[-1]
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))
        assert "".join(d["text"] for d in deltas) == done["text"] == f"Echo: {text}"
        assert client.reconnects == 1
        assert len(client.workers) == 2


async def test_client_refused_token_raises(hub: HubUnderTest) -> None:
    with pytest.raises(HubClientError) as info:
        async with HubClient(hub.url, "not-a-token"):
            pass
    assert info.value.code == "unauthorized"


async def test_client_request_errors_carry_the_code(hub: HubUnderTest) -> None:
    async with HubClient(hub.url, hub.token("ann")) as client:
        with pytest.raises(HubClientError) as info:
            await client.send("x", channel="dm:bob")
        assert info.value.code == "forbidden"
        joined = await client.join("lobby")
        assert joined["room"] == "lobby"
