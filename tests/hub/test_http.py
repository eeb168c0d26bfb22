"""The HTTP face: health, login, history, chat (JSON and SSE), events, publish, metrics, the web client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.conftest import HubFactory, HubUnderTest


def _auth(hub: HubUnderTest, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token(user)}"}


async def _sse_events(resp: aiohttp.ClientResponse, until: str, limit: int = 500) -> list[str]:
    """Data lines of a Server-Sent Events response until one equals or contains ``until``."""
    out: list[str] = []
    for _ in range(limit):
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("data: "):
            out.append(line[6:])
            if until in line:
                return out
    raise AssertionError(f"no {until!r} in {out}")


async def test_health_reports_ok_with_worker_and_broker(hub: HubUnderTest) -> None:
    resp = await hub.session.get(f"{hub.url}/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["worker"] == hub.settings.worker_id
    assert body["llm"] == "echo"


async def test_guest_login_mints_a_working_token(hub: HubUnderTest) -> None:
    resp = await hub.session.post(f"{hub.url}/api/login", json={"name": "  Zoë  Q "})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["name"] == "Zoë Q"
    assert body["user"]["id"].startswith("guest-")
    from tests.support.wsclient import connect

    client = await connect(hub.session, hub.ws_url, body["token"])
    assert client.welcome["user"] == body["user"]


async def test_guest_login_rejects_bad_names_and_is_404_when_off(start_hub: HubFactory) -> None:
    hub = await start_hub()
    for bad in ({}, {"name": ""}, {"name": "x" * 65}):
        resp = await hub.session.post(f"{hub.url}/api/login", json=bad)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid"
    resp = await hub.session.post(f"{hub.url}/api/login", data="not json")
    assert resp.status == 400
    off = await start_hub(guest_login=False)
    resp = await off.session.post(f"{off.url}/api/login", json={"name": "Ann"})
    assert resp.status == 404


async def test_history_over_http_needs_a_token_and_pages(hub: HubUnderTest) -> None:
    resp = await hub.session.get(f"{hub.url}/api/history")
    assert resp.status == 401
    client = await hub.connect("ann")
    await client.send(type="send", text="over http", ref="h")
    await client.reply()
    resp = await hub.session.get(
        f"{hub.url}/api/history",
        params={"channel": "dm:ann", "limit": "2"},
        headers=_auth(hub, "ann"),
    )
    assert resp.status == 200
    body = await resp.json()
    assert [m["text"] for m in body["messages"]] == ["over http", "Echo: over http"]
    assert body["more"] is True
    resp = await hub.session.get(
        f"{hub.url}/api/history", params={"limit": "500"}, headers=_auth(hub, "ann")
    )
    assert resp.status == 400


async def test_chat_json_returns_the_reply_and_reaches_websockets(hub: HubUnderTest) -> None:
    tab = await hub.connect("ann")
    await tab.drain()
    resp = await hub.session.post(
        f"{hub.url}/api/chat", json={"text": "from curl"}, headers=_auth(hub, "ann")
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["text"] == "Echo: from curl"
    assert body["stop_reason"] == "end"
    await tab.expect("message", text="from curl")
    _deltas, done = await tab.reply()
    assert done["id"] == body["id"]


async def test_chat_stream_is_server_sent_events_ending_in_done(hub: HubUnderTest) -> None:
    resp = await hub.session.post(
        f"{hub.url}/api/chat",
        json={"text": "stream me please", "stream": True},
        headers=_auth(hub, "ann"),
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await _sse_events(resp, "[DONE]")
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["content"] for e in events if e.startswith('{"content"')]
    assert "".join(pieces) == "Echo: stream me please"


async def test_chat_rejects_bad_bodies_clearly(hub: HubUnderTest) -> None:
    resp = await hub.session.post(
        f"{hub.url}/api/chat", json={"text": ""}, headers=_auth(hub, "ann")
    )
    assert resp.status == 400
    resp = await hub.session.post(
        f"{hub.url}/api/chat", json={"text": "x", "channel": "dm:bob"}, headers=_auth(hub, "ann")
    )
    assert resp.status == 403


async def test_events_stream_carries_frames_and_resumes_with_last_event_id(
    hub: HubUnderTest,
) -> None:
    resp = await hub.session.get(f"{hub.url}/api/events", headers=_auth(hub, "ann"))
    assert resp.status == 200
    await _sse_events(resp, '"welcome"')
    tab = await hub.connect("ann")
    await tab.send(type="send", text="seen by sse", ref="s")
    events = await _sse_events(resp, '"done"')
    frames = [json.loads(e) for e in events]
    assert any(f["type"] == "message" and f["text"] == "seen by sse" for f in frames)
    resp.close()
    raw_ids: list[str] = []
    async with hub.session.get(f"{hub.url}/api/events", headers=_auth(hub, "ann")) as again:
        for _ in range(200):
            line = (await asyncio.wait_for(again.content.readline(), 5)).decode()
            if line.startswith("id: "):
                raw_ids.append(line[4:].strip())
                break
    await tab.send(type="send", text="missed by sse", ref="m")
    await tab.reply()
    headers = {**_auth(hub, "ann"), "Last-Event-ID": raw_ids[0]}
    async with hub.session.get(f"{hub.url}/api/events", headers=headers) as resumed:
        events = await _sse_events(resumed, '"Echo: missed by sse"')
        welcome: dict[str, Any] = json.loads(events[0])
        assert welcome["resumed"] == {"dm:ann": True}
        assert any('"missed by sse"' in e for e in events)


async def test_publish_needs_the_server_key_and_reaches_the_user(start_hub: HubFactory) -> None:
    hub = await start_hub(api_key="backend-key")
    tab = await hub.connect("ann")
    await tab.drain()
    url = f"{hub.url}/api/publish"
    payload = {"channel": "dm:ann", "text": "Your order shipped", "author": {"name": "Shop"}}
    assert (await hub.session.post(url, json=payload)).status == 401
    bad = await hub.session.post(url, json=payload, headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    ok = await hub.session.post(url, json=payload, headers={"Authorization": "Bearer backend-key"})
    assert ok.status == 200
    message = await tab.expect("message", text="Your order shipped")
    assert message["author"]["name"] == "Shop"
    assert message["id"] == (await ok.json())["id"]
    off = await start_hub()
    resp = await off.session.post(f"{off.url}/api/publish", json=payload)
    assert resp.status == 404


async def test_metrics_count_connections_and_messages(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    await client.send(type="send", text="count me", ref="c")
    await client.reply()
    # The reply is counted once its end is stored, which may be just after the client saw it.
    for _ in range(50):
        text = await (await hub.session.get(f"{hub.url}/metrics")).text()
        if 'hub_replies_total{stop_reason="end"}' in text:
            break
        await asyncio.sleep(0.02)
    assert 'hub_connections{transport="ws"} 1.0' in text
    assert "hub_messages_total 1.0" in text
    assert 'hub_replies_total{stop_reason="end"} 1.0' in text


async def test_web_client_is_served_at_root_and_nothing_outside_frontend(hub: HubUnderTest) -> None:
    resp = await hub.session.get(f"{hub.url}/")
    assert resp.status == 200
    assert "<hub-chat" in await resp.text()
    resp = await hub.session.get(f"{hub.url}/..%2f..%2fpyproject.toml")
    assert resp.status == 404
    resp = await hub.session.get(f"{hub.url}/does-not-exist.js")
    assert resp.status == 404


async def test_cors_lets_allowed_sites_embed_the_client_and_call_the_api(
    start_hub: HubFactory,
) -> None:
    hub = await start_hub(allowed_origins="https://shop.example")
    site = {"Origin": "https://shop.example"}
    script = await hub.session.get(
        f"{hub.url}/hub-chat.js", headers={"Origin": "https://any.example"}
    )
    assert script.status == 200
    assert script.headers["Access-Control-Allow-Origin"] == "*"
    preflight = await hub.session.options(
        f"{hub.url}/api/login",
        headers={
            **site,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    login = await hub.session.post(f"{hub.url}/api/login", json={"name": "Ann"}, headers=site)
    assert login.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    token = (await login.json())["token"]
    async with hub.session.get(
        f"{hub.url}/api/events", headers={**site, "Authorization": f"Bearer {token}"}
    ) as events:
        assert events.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    evil = {"Origin": "https://evil.example"}
    refused = await hub.session.options(
        f"{hub.url}/api/login", headers={**evil, "Access-Control-Request-Method": "POST"}
    )
    assert refused.status == 403
    login = await hub.session.post(f"{hub.url}/api/login", json={"name": "Eve"}, headers=evil)
    assert "Access-Control-Allow-Origin" not in login.headers


async def test_rooms_over_http_let_curl_users_post_to_a_room(hub: HubUnderTest) -> None:
    tab = await hub.connect("ann")
    await tab.drain()
    url = f"{hub.url}/api/rooms/lab"
    chat = {"text": "hello lab", "channel": "room:lab"}
    refused = await hub.session.post(f"{hub.url}/api/chat", json=chat, headers=_auth(hub, "ann"))
    assert refused.status == 403
    joined = await hub.session.post(f"{url}/join", headers=_auth(hub, "ann"))
    assert (await joined.json()) == {"room": "lab", "channel": "room:lab", "member": True}
    await tab.expect("joined", room="lab")  # the user's open tabs follow
    posted = await hub.session.post(f"{hub.url}/api/chat", json=chat, headers=_auth(hub, "ann"))
    assert posted.status == 200
    await tab.expect("message", text="hello lab")
    left = await hub.session.post(f"{url}/leave", headers=_auth(hub, "ann"))
    assert (await left.json())["member"] is False
    await tab.expect("left", room="lab")
    again = await hub.session.post(f"{url}/leave", headers=_auth(hub, "ann"))
    assert again.status == 404
    bad = await hub.session.post(f"{hub.url}/api/rooms/Bad Name/join", headers=_auth(hub, "ann"))
    assert bad.status == 400
    assert (await hub.session.post(f"{url}/join")).status == 401
