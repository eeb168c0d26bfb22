"""``/api/events`` as a browser's EventSource uses it: tickets, named events, ids on every event."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from hub.web.access_log import AccessLogger
from hub.web.app import create_app
from tests.conftest import HubFactory, HubUnderTest, make_settings
from tests.support.sse import events_until, next_event


def _auth(hub: HubUnderTest, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token(user)}"}


async def test_a_ticket_opens_one_event_stream_once(hub: HubUnderTest) -> None:
    assert (await hub.session.post(f"{hub.url}/api/ticket")).status == 401
    resp = await hub.session.post(f"{hub.url}/api/ticket", headers=_auth(hub, "ann"))
    body = await resp.json()
    assert body["expires_in"] <= 60
    url = f"{hub.url}/api/events?ticket={body['ticket']}"
    async with hub.session.get(url) as stream:
        assert stream.status == 200
        welcome = await next_event(stream)
        assert welcome.event == "welcome" and welcome.json()["user"]["id"] == "ann"
        assert welcome.retry is not None and welcome.id
    async with hub.session.get(url) as again:
        assert again.status == 401
        assert "POST /api/ticket" in (await again.json())["error"]["message"]
    bad = await hub.session.get(f"{hub.url}/api/events?ticket=not-a-ticket-at-all-xyz")
    assert bad.status == 401


async def test_every_event_is_named_and_has_an_id(hub: HubUnderTest) -> None:
    async with hub.session.get(f"{hub.url}/api/events", headers=_auth(hub, "ann")) as stream:
        await next_event(stream)
        tab = await hub.connect("ann")
        await tab.send(type="send", text="one two three", ref="s")
        events = await events_until(stream, "done")
    names = {e.event for e in events}
    assert {"message", "delta", "done"} <= names
    assert all(e.id for e in events)
    assert all(e.event == e.json()["type"] for e in events)


async def test_last_event_id_mid_reply_resumes_without_gap_or_repeat(
    start_hub: HubFactory,
) -> None:
    hub = await start_hub(echo_delay=0.05, delta_interval=0.0)
    words = " ".join(f"w{i}" for i in range(30))
    async with hub.session.get(f"{hub.url}/api/events", headers=_auth(hub, "ann")) as stream:
        await next_event(stream)
        tab = await hub.connect("ann")
        await tab.send(type="send", text=words, ref="s")
        seen = await events_until(stream, "delta", seq=3)
    first = [e.json()["text"] for e in seen if e.event == "delta"]
    headers = {**_auth(hub, "ann"), "Last-Event-ID": str(seen[-1].id)}
    async with hub.session.get(f"{hub.url}/api/events", headers=headers) as resumed:
        rest = await events_until(resumed, "done")
    deltas = [e.json() for e in rest if e.event == "delta"]
    assert deltas[0]["seq"] == 4
    assert [d["seq"] for d in deltas] == list(range(4, 4 + len(deltas)))
    done = rest[-1].json()
    assert "".join(first) + "".join(d["text"] for d in deltas) == done["text"]
    assert not [e for e in rest if e.event == "message" and e.json()["author"]["role"] == "user"]


async def test_tickets_never_reach_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(broker_url="memory://"))
    server = TestServer(app)
    await server.start_server(access_log_class=AccessLogger)
    try:
        async with aiohttp.ClientSession() as session:
            with caplog.at_level(logging.INFO, logger="aiohttp.access"):
                await session.get(
                    f"{server.make_url('/api/events')}?ticket=SeCrEt1234567890abcdefgh"
                )
    finally:
        await server.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any('"GET /api/events HTTP/1.1" 401' in line for line in lines), lines
    assert not any("SeCrEt" in line for line in lines)
