"""Sessions and room access (issue 11): tokens that expire or are revoked end their sessions;
rooms admit only whom the token, or the operator for guests, allows; room creation is bounded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from hub.auth import mint_token
from hub.core.identity import revoke_user
from hub.web.keys import HUB
from tests.abuse.support import answer
from tests.conftest import SECRET, HubFactory, HubUnderTest
from tests.support.sse import events_until
from tests.support.wsclient import Closed, WsClient, connect


async def _closed_with(client: WsClient) -> tuple[str, int | None]:
    """The error that came before the close, and the close code."""
    error = await client.expect("error", code="unauthorized")
    with pytest.raises(Closed) as closed:
        await client.expect("never")
    return error["message"], closed.value.code


async def test_an_expired_tokens_websocket_and_event_stream_are_closed(
    hub: HubUnderTest,
) -> None:
    token = mint_token(SECRET, "ann", "Ann", 2)
    client = await connect(hub.session, hub.ws_url, token)
    headers = {"Authorization": f"Bearer {token}"}
    async with hub.session.get(f"{hub.url}/api/events", headers=headers) as stream:
        message, code = await _closed_with(client)
        assert "expired" in message and code == 4001
        events = await events_until(stream, "close")
    assert events[-1].json()["code"] == 4001
    assert any(e.event == "error" and e.json()["code"] == "unauthorized" for e in events)


async def test_revoking_a_user_closes_its_sessions_and_voids_its_tokens(
    start_hub: HubFactory, broker_url: str
) -> None:
    hub = await start_hub()
    ann_token = hub.token("ann")
    anns = [await connect(hub.session, hub.ws_url, ann_token) for _ in range(2)]
    bob = await hub.connect("bob")
    if broker_url.startswith("redis"):
        done = _hub_cli(hub, "revoke", "--user", "ann")
        assert done.returncode == 0, done.stderr
    else:
        await revoke_user(hub.app[HUB].broker, "ann", hub.settings.token_max_ttl)
    assert [await _closed_with(a) for a in anns] == [
        ("Your sign-in was revoked; sign in again.", 4001)
    ] * 2
    await bob.send(type="ping", ref="p")
    await bob.expect("pong", ref="p")
    ws = await hub.session.ws_connect(hub.ws_url)
    await ws.send_json({"type": "hello", "token": ann_token})
    assert (await ws.receive_json(timeout=5))["code"] == "unauthorized"
    await ws.receive(timeout=5)
    assert ws.close_code == 4001
    headers = {"Authorization": f"Bearer {ann_token}"}
    async with hub.session.get(f"{hub.url}/api/history", headers=headers) as resp:
        assert resp.status == 401
    await asyncio.sleep(1.1)  # a token issued in a later second than the revocation
    await connect(hub.session, hub.ws_url, hub.token("ann"))


def _hub_cli(hub: HubUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_SECRET=SECRET,
        HUB_BROKER_URL=hub.settings.broker_url,
        HUB_REDIS_PREFIX=hub.settings.redis_prefix,
    )
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_revoke_on_the_embedded_broker_says_what_to_do() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "hub", "revoke", "--user", "ann"],
        env={**env, "HUB_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "HUB_BROKER_URL=redis://" in done.stderr


async def _join(client: WsClient, room: str) -> dict[str, Any]:
    await client.send(type="join", room=room, ref=f"j-{room}")
    return await answer(client, f"j-{room}", ("joined", "error"))


async def test_a_token_limited_to_some_rooms(hub: HubUnderTest) -> None:
    token = mint_token(SECRET, "ann", "Ann", 600, rooms=["team-*", "lobby"])
    ann = await connect(hub.session, hub.ws_url, token)
    assert [(await _join(ann, r))["type"] for r in ("team-a", "lobby", "other", "teamx")] == [
        "joined",
        "joined",
        "error",
        "error",
    ]
    headers = {"Authorization": f"Bearer {token}"}
    params = {"channel": "room:other"}
    async with hub.session.get(f"{hub.url}/api/history", params=params, headers=headers) as r:
        assert r.status == 403


async def test_rooms_a_token_no_longer_allows_are_not_in_the_session(hub: HubUnderTest) -> None:
    full = await hub.connect("ann")
    assert (await _join(full, "secret"))["type"] == "joined"
    limited = mint_token(SECRET, "ann", "Ann", 600, rooms=["lobby"])
    again = await connect(hub.session, hub.ws_url, limited)
    assert "room:secret" not in again.welcome["channels"]
    await again.send(type="send", channel="room:secret", text="hi", ref="s")
    assert (await again.expect("error", ref="s"))["code"] == "forbidden"


async def _guest(hub: HubUnderTest, name: str) -> WsClient:
    async with hub.session.post(f"{hub.url}/api/login", json={"name": name}) as resp:
        token = (await resp.json())["token"]
    return await connect(hub.session, hub.ws_url, token)


async def test_guests_join_only_the_open_rooms(start_hub: HubFactory) -> None:
    hub = await start_hub(guest_rooms="lobby,help-*")
    guest = await _guest(hub, "Gus")
    outcomes = [(await _join(guest, r))["type"] for r in ("lobby", "help-1", "staff")]
    assert outcomes == ["joined", "joined", "error"]
    closed = await start_hub(guest_rooms="")
    nobody = await _guest(closed, "Nel")
    error = await _join(nobody, "lobby")
    assert error["code"] == "forbidden" and "Guests may not join rooms" in error["message"]


async def test_room_creation_per_user_is_bounded(start_hub: HubFactory) -> None:
    hub = await start_hub(max_rooms_per_user=4, room_create_burst=3, room_create_rate=0.001)
    ann, bob, cy = [await hub.connect(u) for u in ("ann", "bob", "cy")]
    created = [(await _join(ann, f"new-{i}"))["type"] for i in range(150)]
    assert created.count("joined") == 3
    for i in range(2):
        assert (await _join(cy, f"cy-{i}"))["type"] == "joined"
    joins = [(await _join(bob, r))["type"] for r in ("new-0", "new-1", "new-2", "cy-0", "cy-1")]
    assert joins == ["joined"] * 4 + ["error"]  # joining existing rooms, up to the cap
