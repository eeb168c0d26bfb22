"""Terminals and scripts: the /ws upgrade signs in with ``Authorization: Bearer``, no hello needed."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import HubUnderTest


async def _frame(ws: aiohttp.ClientWebSocketResponse, ftype: str, **fields: Any) -> dict[str, Any]:
    """The next frame of a type (others skipped), as a plain client reads them."""
    for _ in range(200):
        frame = json.loads(await ws.receive_str(timeout=10))
        if frame["type"] == ftype and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {ftype}")


async def test_the_header_signs_in_and_welcome_comes_without_hello(hub: HubUnderTest) -> None:
    headers = {"Authorization": f"Bearer {hub.token('ann')}"}
    async with hub.session.ws_connect(hub.ws_url, headers=headers) as ws:
        welcome = await _frame(ws, "welcome")
        assert welcome["user"]["id"] == "ann"
        await ws.send_str(json.dumps({"type": "send", "text": "hi there", "ref": "a"}))
        ack = await _frame(ws, "ack", ref="a")
        done = await _frame(ws, "done")
        assert done["text"] == "Echo: hi there"
    async with hub.session.ws_connect(hub.ws_url, headers=headers) as ws:
        await _frame(ws, "welcome")
        # A hello with resume may still follow: the session reopens from the client's ids.
        hello = {"type": "hello", "token": hub.token("ann"), "resume": {"dm:ann": ack["id"]}}
        await ws.send_str(json.dumps(hello))
        again = await _frame(ws, "welcome")
        assert again["resumed"] == {"dm:ann": True}
        replayed = await _frame(ws, "message")
        assert replayed["id"] == done["id"]


async def test_a_bad_header_is_refused_before_the_upgrade(hub: HubUnderTest) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await hub.session.ws_connect(hub.ws_url, headers={"Authorization": "Bearer nope"})
    assert refused.value.status == 401
