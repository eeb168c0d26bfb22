"""The nginx configuration: the committed one and the local one deploy/cluster.py renders.

Three kinds of checks: the rules read right (upgrade headers, timeouts above the heartbeat,
unbuffered SSE, no sticky sessions, failover); real ``nginx -t`` accepts both configs; and a
real nginx with the rendered config, in front of two small aiohttp upstreams and one dead
port, proxies what the hub needs (round robin around a dead worker, WebSocket upgrade,
Server-Sent Events without buffering, forwarded headers).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from deploy.cluster import (
    NGINX_CONF,
    NGINX_HTTP_RULES,
    NGINX_SERVER_RULES,
    UPSTREAM_NAME,
    ManagedProcess,
    free_port,
    http_status,
    read_upstream_template,
    render_local_nginx_conf,
)
from hub.settings import Settings

BALANCING_DIRECTIVES = ("ip_hash", "hash", "sticky", "least_conn", "random", "least_time")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def directive_args(text: str, name: str) -> list[str]:
    """The arguments of every ``name ...;`` statement in ``text`` (comments removed)."""
    pattern = re.compile(r"(?:^|[;{}\s])" + re.escape(name) + r"\s+([^;{}]*);", re.M)
    return [" ".join(m.group(1).split()) for m in pattern.finditer(strip_comments(text))]


def block(text: str, header: str) -> str:
    """The body of the first ``header { ... }`` block (no nested braces inside)."""
    match = re.search(re.escape(header) + r"\s*\{([^{}]*)\}", strip_comments(text))
    assert match is not None, f"no `{header} {{ ... }}` block"
    return match.group(1)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", value.strip())
    assert match is not None, f"not an nginx time: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def server_level(text: str) -> str:
    """``text`` with every location block removed: what applies to all locations."""
    return re.sub(r"location\s+[^{]*\{[^{}]*\}", "", strip_comments(text))


def render(tmp_path: Path, listen_port: int, workers: list[tuple[str, int]]) -> Path:
    path = tmp_path / "nginx.conf"
    path.write_text(
        render_local_nginx_conf(
            listen_host="127.0.0.1",
            listen_port=listen_port,
            workers=workers,
            pid_path=tmp_path / "nginx.pid",
            access_log=tmp_path / "access.log",
        )
    )
    return path


HTTP_RULES = NGINX_HTTP_RULES.read_text()
SERVER_RULES = NGINX_SERVER_RULES.read_text()
MAIN_CONF = NGINX_CONF.read_text()


# --------------------------------------------------------------------------- the rules


def test_committed_config_includes_the_shared_rule_files() -> None:
    includes = directive_args(MAIN_CONF, "include")
    resolved = {(NGINX_CONF.parent / path).resolve() for path in includes}
    assert resolved == {NGINX_HTTP_RULES, NGINX_SERVER_RULES}
    assert all(path.is_file() for path in resolved)


def test_rendered_config_includes_the_same_rule_files_and_upstream_parameters(
    tmp_path: Path,
) -> None:
    text = render(tmp_path, 8000, [("127.0.0.1", 9001), ("127.0.0.1", 9002)]).read_text()
    assert {Path(p) for p in directive_args(text, "include")} == {
        NGINX_HTTP_RULES,
        NGINX_SERVER_RULES,
    }
    committed = read_upstream_template(MAIN_CONF)
    assert read_upstream_template(text) == committed
    servers = directive_args(block(text, f"upstream {UPSTREAM_NAME}"), "server")
    assert servers == [f"127.0.0.1:{port} {committed.server_params}" for port in (9001, 9002)]
    assert directive_args(text, "listen") == ["127.0.0.1:8000"]
    assert "daemon off;" in text


def test_no_sticky_sessions_anywhere(tmp_path: Path) -> None:
    rendered = render(tmp_path, 8000, [("127.0.0.1", 9001)]).read_text()
    for name, text in [("nginx.conf", MAIN_CONF), ("rendered", rendered)]:
        upstream = block(text, f"upstream {UPSTREAM_NAME}")
        for directive in BALANCING_DIRECTIVES:
            assert not directive_args(upstream, directive), f"{name}: {directive} in upstream"
    for text in (HTTP_RULES, SERVER_RULES):
        assert not re.search(r"\bupstream\s+\S+\s*\{", strip_comments(text))  # shells list workers
        assert not directive_args(text, "sticky")


def test_websocket_upgrade_headers() -> None:
    mapping = block(HTTP_RULES, "map $http_upgrade $connection_upgrade")
    assert re.search(r"default\s+upgrade;", mapping)
    assert re.search(r"''\s+close;", mapping)
    server = server_level(SERVER_RULES)
    headers = directive_args(server, "proxy_set_header")
    assert "Upgrade $http_upgrade" in headers
    assert "Connection $connection_upgrade" in headers
    assert directive_args(server, "proxy_http_version") == ["1.1"]
    assert "proxy_pass http://hub_workers" in block(SERVER_RULES, "location = /ws").replace(";", "")


def test_forwarded_headers_and_body_limit() -> None:
    headers = directive_args(server_level(SERVER_RULES), "proxy_set_header")
    names = {h.split()[0] for h in headers}
    assert {
        "Host",
        "X-Real-IP",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    } <= names
    assert "Host $http_host" in headers  # keeps the port: the hub's Origin check needs it
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in headers
    # proxy_set_header in a location would silently drop every header set at server level.
    for match in re.finditer(r"location\s+[^{]*\{([^{}]*)\}", strip_comments(SERVER_RULES)):
        assert "proxy_set_header" not in match.group(1)
    assert directive_args(SERVER_RULES, "client_max_body_size") == ["1m"]


def test_timeouts_outlast_the_websocket_heartbeat() -> None:
    heartbeat = Settings().heartbeat
    server = server_level(SERVER_RULES)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = directive_args(server, name)
        assert seconds(value) >= 75 and seconds(value) > 3 * heartbeat, name
    ws = block(SERVER_RULES, "location = /ws")
    assert all(seconds(v) >= 75 for v in directive_args(ws, "proxy_read_timeout"))
    for path in ("/api/events", "/api/chat"):
        for value in directive_args(
            block(SERVER_RULES, f"location = {path}"), "proxy_read_timeout"
        ):
            assert seconds(value) >= 75, path


def test_server_sent_events_are_not_buffered() -> None:
    for location in ("= /api/events", "= /api/chat", "^~ /api/replies/"):
        body = block(SERVER_RULES, f"location {location}")
        assert directive_args(body, "proxy_buffering") == ["off"], location
        assert "proxy_pass http://hub_workers" in body.replace(";", "")
    # and nothing turns buffering back on or gzips the stream server-wide
    assert directive_args(server_level(SERVER_RULES), "proxy_buffering") == []
    assert directive_args(HTTP_RULES + SERVER_RULES, "gzip") in ([], ["off"])


def test_failover_to_the_next_worker() -> None:
    server = server_level(SERVER_RULES)
    (next_upstream,) = directive_args(server, "proxy_next_upstream")
    conditions = next_upstream.split()
    assert {"error", "timeout"} <= set(conditions)
    assert "non_idempotent" not in conditions  # a POST that reached a worker is never resent
    assert "off" not in conditions
    (tries,) = directive_args(server, "proxy_next_upstream_tries")
    assert int(tries) >= 2
    (connect,) = directive_args(server, "proxy_connect_timeout")
    assert seconds(connect) <= 5
    params = read_upstream_template(MAIN_CONF).server_params
    assert params == "max_fails=0"  # passive marking shuts out long-lived WebSockets


def test_health_is_passed_through() -> None:
    body = block(SERVER_RULES, "location = /health")
    assert "proxy_pass http://hub_workers" in body.replace(";", "")
    assert "return" not in body


# --------------------------------------------------------------------------- nginx -t


def nginx_test(
    nginx: str, conf: Path, prefix: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [nginx, "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr", *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_committed_config_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    # nginx.conf sets no pid (the image's default is right there); point it somewhere we may write.
    result = nginx_test(nginx_bin, NGINX_CONF, prefix, "-g", f"pid {prefix}/nginx.pid;")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_rendered_local_config_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    conf = render(tmp_path, free_port(), [("127.0.0.1", free_port()) for _ in range(3)])
    result = nginx_test(nginx_bin, conf, tmp_path / "prefix")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# --------------------------------------------------------------------------- a real proxy


@dataclass
class Proxy:
    url: str
    nginx_port: int
    release: dict[str, asyncio.Event]


def upstream_app(name: str, release: dict[str, asyncio.Event]) -> web.Application:
    """A stand-in worker: /health names it, /ws echoes, SSE routes wait between events."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": name})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_json(
            {
                "type": "welcome",
                "worker": name,
                "host": request.headers.get("Host"),
                "xff": request.headers.get("X-Forwarded-For"),
                "proto": request.headers.get("X-Forwarded-Proto"),
            }
        )
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    async def sse(request: web.Request) -> web.StreamResponse:
        # The second event is written only after the client has read the first, so the
        # test times out if anything on the way holds an event back until more data comes.
        key = request.query.get("key", request.path)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"n": 1}\n\n')
        await asyncio.wait_for(release[key].wait(), 5)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def login(request: web.Request) -> web.Response:
        return web.json_response({"token": "t", "worker": name})

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", ws)
    app.router.add_get("/api/events", sse)
    app.router.add_post("/api/chat", sse)
    return app


@pytest.fixture
async def proxy(nginx_bin: str, tmp_path: Path) -> AsyncIterator[Proxy]:
    release: dict[str, asyncio.Event] = {}
    runners = []
    ports = []
    for name in ("A", "B"):
        runner = web.AppRunner(upstream_app(name, release))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    dead = free_port()  # nothing listens here: a crashed worker
    nginx_port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = render(
        prefix, nginx_port, [("127.0.0.1", ports[0]), ("127.0.0.1", dead), ("127.0.0.1", ports[1])]
    )
    process = ManagedProcess(
        "nginx",
        [nginx_bin, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"],
        tmp_path / "nginx.log",
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{nginx_port}"
        for _ in range(100):
            if await asyncio.to_thread(http_status, url + "/health", 1.0) is not None:
                break
            assert process.alive(), process.log_tail()
            await asyncio.sleep(0.05)
        else:
            pytest.fail("nginx did not answer within 5 s\n" + process.log_tail())
        yield Proxy(url=url, nginx_port=nginx_port, release=release)
    finally:
        process.stop(5.0)
        for runner in runners:
            await runner.cleanup()


async def test_round_robin_skips_a_dead_worker(proxy: Proxy) -> None:
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(9):
            async with session.get(proxy.url + "/health") as response:
                assert response.status == 200
                seen.append((await response.json())["worker"])
    assert set(seen) == {"A", "B"}
    assert abs(seen.count("A") - seen.count("B")) <= 2  # spread, not pinned


async def test_websocket_upgrade_through_the_proxy(proxy: Proxy) -> None:
    workers = []
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.ws_connect(proxy.url.replace("http", "ws") + "/ws") as sock:
                welcome = await sock.receive_json(timeout=5)
                workers.append(welcome["worker"])
                assert welcome["host"] == f"127.0.0.1:{proxy.nginx_port}"
                assert welcome["xff"] == "127.0.0.1"
                assert welcome["proto"] == "http"
                await sock.send_str('{"type":"ping"}')
                assert await sock.receive_str(timeout=5) == '{"type":"ping"}'
    assert set(workers) == {"A", "B"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/events"), ("POST", "/api/chat")])
async def test_server_sent_events_flow_unbuffered(proxy: Proxy, method: str, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # once on each live worker
            proxy.release[path] = asyncio.Event()
            async with session.request(method, proxy.url + path, json={}) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 3)
                assert first == b'data: {"n": 1}\n\n'
                proxy.release[path].set()
                rest = await asyncio.wait_for(response.content.read(), 5)
                assert rest == b"data: [DONE]\n\n"


async def test_guest_logins_are_limited_per_address(proxy: Proxy) -> None:
    statuses, bodies = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(40):
            async with session.post(proxy.url + "/api/login", json={"name": "x"}) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "2"
                    bodies.append((await response.json())["error"]["code"])
    # 1 + a burst of 20 at once; the rate (30 a minute) lets one more through every 2 s.
    assert 21 <= statuses.count(200) <= 22
    assert statuses.count(429) == 40 - statuses.count(200)
    assert set(bodies) == {"rate_limited"}


async def test_open_websockets_are_limited_per_address(proxy: Proxy) -> None:
    url = proxy.url.replace("http", "ws") + "/ws"
    opened, refused = [], 0
    connector = aiohttp.TCPConnector(limit=0)  # the default pool would queue past 100
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(60):
        try:
            for _ in range(205):
                try:
                    opened.append(await session.ws_connect(url))
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 429
                    refused += 1
            assert (len(opened), refused) == (200, 5)
        finally:
            for sock in opened:
                await sock.close()
