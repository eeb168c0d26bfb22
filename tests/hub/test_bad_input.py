"""Bad input gets its documented answer, and the connection keeps working where the contract says."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import jwt
import pytest

from tests.conftest import HubFactory, HubUnderTest
from tests.support.wsclient import Closed, WsClient


async def _still_works(client: WsClient) -> None:
    await client.send(type="ping", ref="alive")
    await client.expect("pong", ref="alive")


async def test_non_json_text_is_a_bad_frame(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.ws.send_str("this is not json")
    assert (await client.expect("error"))["code"] == "bad_frame"
    await _still_works(client)


async def test_binary_frame_is_a_bad_frame(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.ws.send_bytes(b"\x00\x01")
    assert (await client.expect("error"))["code"] == "bad_frame"
    await _still_works(client)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "dance"}, "unknown_type"),
        ({"no": "type"}, "unknown_type"),
        ({"type": "send"}, "invalid"),
        ({"type": "send", "text": 42}, "invalid"),
        ({"type": "history", "channel": "dm:ann", "limit": 500}, "invalid"),
        ({"type": "history", "channel": "general"}, "invalid"),
        ({"type": "join", "room": "Not Allowed!"}, "invalid"),
        ({"type": "join", "room": "x" * 65}, "invalid"),
        ({"type": "join"}, "invalid"),
        ({"type": "stop"}, "invalid"),
        ([1, 2, 3], "bad_frame"),
    ],
)
async def test_malformed_frames_get_an_error_that_names_the_problem(
    hub: HubUnderTest, frame: object, code: str
) -> None:
    client = await hub.connect("ann")
    if isinstance(frame, dict):
        frame = {**frame, "ref": "bad"}
    await client.ws.send_str(json.dumps(frame))
    error = await client.expect("error")
    assert error["code"] == code
    assert len(error["message"]) > 10
    if isinstance(frame, dict):
        assert error.get("ref") == "bad"
    await _still_works(client)


async def test_text_over_the_limit_is_too_long(start_hub: HubFactory) -> None:
    hub = await start_hub(max_text=100)
    client = await hub.connect("ann")
    await client.send(type="send", text="x" * 101, ref="big")
    error = await client.expect("error", ref="big")
    assert error["code"] == "too_long"
    assert "100" in error["message"]
    await _still_works(client)


async def test_frame_over_max_frame_closes_1009(start_hub: HubFactory) -> None:
    hub = await start_hub(max_frame=2048)
    client = await hub.connect("ann")
    await client.send(type="send", text="y" * 4000, ref="huge")
    with pytest.raises(Closed):
        await client.drain(5)
    assert client.ws.close_code == 1009


async def test_no_hello_in_time_is_unauthorized_4001(start_hub: HubFactory) -> None:
    hub = await start_hub(hello_timeout=0.3)
    ws = await hub.session.ws_connect(hub.ws_url)
    client = WsClient(ws)
    error = await client.expect("error")
    assert error["code"] == "unauthorized"
    assert "hello" in error["message"]
    with pytest.raises(Closed):
        await client.drain(3)
    assert ws.close_code == 4001


def _forged(hub: HubUnderTest) -> list[tuple[str, str]]:
    now = int(time.time())
    claims = {"sub": "ann", "name": "Ann", "exp": now + 600}
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    return [
        (
            "wrong secret",
            jwt.encode(claims, "not-the-secret-not-the-secret-123", algorithm="HS256"),
        ),
        (
            "expired",
            jwt.encode({**claims, "exp": now - 10}, hub.settings.secret_value(), algorithm="HS256"),
        ),
        ("alg none", unsigned),
        ("garbage", "abc.def.ghi"),
        (
            "bad sub",
            jwt.encode(
                {**claims, "sub": "no spaces allowed"},
                hub.settings.secret_value(),
                algorithm="HS256",
            ),
        ),
    ]


async def test_forged_expired_and_unsigned_tokens_are_refused_4001(hub: HubUnderTest) -> None:
    for label, token in _forged(hub):
        ws = await hub.session.ws_connect(hub.ws_url)
        client = WsClient(ws)
        await client.send(type="hello", token=token)
        error = await client.expect("error")
        assert error["code"] == "unauthorized", label
        with pytest.raises(Closed):
            await client.drain(3)
        assert ws.close_code == 4001, label


async def test_a_frame_before_hello_is_unauthorized(hub: HubUnderTest) -> None:
    ws = await hub.session.ws_connect(hub.ws_url)
    client = WsClient(ws)
    await client.send(type="send", text="hi")
    assert (await client.expect("error"))["code"] == "unauthorized"
    with pytest.raises(Closed):
        await client.drain(3)
    assert ws.close_code == 4001


async def test_a_disallowed_origin_gets_403_and_no_upgrade(start_hub: HubFactory) -> None:
    hub = await start_hub(allowed_origins="https://chat.example.com")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await hub.session.ws_connect(hub.ws_url, headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    allowed = await hub.connect("ann", Origin="https://chat.example.com")
    await _still_works(allowed)
    own = await hub.connect("bob", Origin=hub.url)
    await _still_works(own)


async def test_garbage_flood_is_closed_4029(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    for _ in range(25):
        await client.ws.send_str("{nope")
    with pytest.raises(Closed):
        for _ in range(100):
            await client._next(5)
    assert client.ws.close_code == 4029


async def test_hello_twice_is_invalid_but_harmless(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.send(type="hello", token=hub.token("ann"), ref="again")
    assert (await client.expect("error", ref="again"))["code"] == "invalid"
    await _still_works(client)


async def test_the_hub_survives_a_client_vanishing_mid_reply(start_hub: HubFactory) -> None:
    hub = await start_hub(echo_delay=0.02)
    client = await hub.connect("ann")
    await client.send(type="send", text="a b c d e f g h i j k", ref="r")
    await client.expect("delta")
    await client.ws.close()
    await asyncio.sleep(0.5)
    again = await hub.connect("ann")
    await _still_works(again)
    await again.send(type="history", channel="dm:ann", ref="h")
    stored = (await again.expect("history", ref="h"))["messages"]
    replies = [m["text"] for m in stored if m["author"]["role"] == "assistant"]
    assert replies == ["Echo: a b c d e f g h i j k"]
