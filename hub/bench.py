"""``hub bench``: many users in one room (or several, or each in its dm) through a running hub;
fan-out latency and throughput."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

from hub.auth import mint_token

RECEIVE_TIMEOUT = 30.0


class BenchError(Exception):
    """The hub refused the load (login, join); the message says what to change."""


@dataclass
class _Client:
    name: str
    channel: str = ""
    expected: int = 0
    token: str = ""
    ws: aiohttp.ClientWebSocketResponse | None = None
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    workers: set[str] = field(default_factory=set)
    close_code: int | None = None


async def _login(session: aiohttp.ClientSession, url: str, name: str) -> tuple[str, str]:
    """A token and its user id."""
    secret = os.environ.get("HUB_SECRET")
    if secret:  # the operator's own tokens: no guest-login limit, any room
        user_id = "bench-" + secrets.token_hex(6)
        return mint_token(secret, user_id, name, 3600), user_id
    async with session.post(f"{url}/api/login", json={"name": name}) as resp:
        if resp.status != 200:
            raise BenchError(
                f"hub bench: guest login failed ({resp.status}); set HUB_SECRET so the bench "
                "mints its own tokens (guest logins are limited per address, and guests join "
                "only HUB_GUEST_ROOMS)."
            )
        answer = await resp.json()
        return str(answer["token"]), str(answer["user"]["id"])


async def _connect(session: aiohttp.ClientSession, url: str, client: _Client) -> None:
    ws = await session.ws_connect(url.replace("http", "ws", 1) + "/ws", heartbeat=30)
    await ws.send_json({"type": "hello", "token": client.token})
    room = client.channel.removeprefix("room:")
    if client.channel.startswith("room:"):
        await ws.send_json({"type": "join", "room": room})
    while True:
        frame = json.loads((await ws.receive(timeout=RECEIVE_TIMEOUT)).data)
        if frame["type"] == "welcome":
            client.workers.add(frame["worker"])
            if not client.channel.startswith("room:"):
                break
        if frame["type"] == "joined":
            break
        if frame["type"] == "error":
            raise BenchError(
                f"hub bench: {client.name} could not join room {room!r}: {frame['message']} "
                "(guests join only rooms in HUB_GUEST_ROOMS; set HUB_SECRET so the bench mints "
                "its own tokens)"
            )
    client.ws = ws


async def _listen(client: _Client) -> None:
    assert client.ws is not None
    while client.received < client.expected:
        msg = await client.ws.receive(timeout=RECEIVE_TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            client.close_code = client.ws.close_code
            break
        frame = json.loads(msg.data)
        if (
            frame.get("type") == "message"
            and frame.get("channel") == client.channel
            and frame["author"]["role"] == "user"  # not the greeting of a fresh dm
        ):
            sent = float(frame["text"].split(" ", 1)[0])
            client.latencies.append(time.perf_counter() - sent)
            client.received += 1


@dataclass
class _Process:
    """Resident memory and CPU seconds of the scraped workers, summed (from their /metrics)."""

    rss: float = 0.0
    cpu: float = 0.0
    scraped: int = 0


async def _process(session: aiohttp.ClientSession, urls: list[str]) -> _Process | None:
    """Process figures of every worker in ``urls``; None when one has none to give."""
    total = _Process()
    for url in urls:
        async with session.get(f"{url.rstrip('/')}/metrics") as resp:
            found = {
                name: float(value)
                for name, value in (
                    line.split()[:2]
                    for line in (await resp.text()).splitlines()
                    if line and line[0] != "#"
                )
                if name in ("process_resident_memory_bytes", "process_cpu_seconds_total")
            }
        if len(found) < 2:
            return None  # not Linux, or a proxy that does not pass /metrics on
        total.rss += found["process_resident_memory_bytes"]
        total.cpu += found["process_cpu_seconds_total"]
        total.scraped += 1
    return total


async def run_bench(
    url: str,
    users: int,
    messages: int,
    room: str,
    interval: float = 1.0,
    metrics: list[str] | None = None,
    *,
    rooms: int = 1,
    dm: bool = False,
) -> int:
    """Connect ``users`` to ``room``; each sends ``messages``; every member must get every one.

    ``rooms``: the users are dealt round-robin over that many rooms (``room0``, ...); ``dm``:
    each user talks in its own dm instead, where the assistant answers every message.

    ``metrics``: base URLs of every worker, whose /metrics give the server's CPU and memory
    (default ``url``, which behind a proxy is whichever worker answers).
    """
    url = url.rstrip("/")
    metrics_urls = metrics or [url]
    clients = [_Client(f"bench{i}") for i in range(users)]
    connector = aiohttp.TCPConnector(limit=0)  # one socket per simulated user, no pool cap
    async with aiohttp.ClientSession(connector=connector) as session:
        for i, client in enumerate(clients):
            client.token, user_id = await _login(session, url, client.name)
            client.channel = (
                f"dm:{user_id}" if dm else f"room:{room}{i % rooms if rooms > 1 else ''}"
            )
        members: dict[str, int] = {}
        for client in clients:
            members[client.channel] = members.get(client.channel, 0) + 1
        for client in clients:
            client.expected = members[client.channel] * messages
        idle = await _process(session, metrics_urls)
        for i in range(0, users, 50):  # connect in waves so the hub's accept queue keeps up
            await asyncio.gather(*(_connect(session, url, c) for c in clients[i : i + 50]))
        connected = await _process(session, metrics_urls)
        expected = users * messages
        listeners = [asyncio.create_task(_listen(c)) for c in clients]
        start = time.perf_counter()

        async def talk(client: _Client) -> None:
            assert client.ws is not None
            for i in range(messages):
                if client.ws.closed:
                    return
                stamp = time.perf_counter()
                await client.ws.send_json(
                    {
                        "type": "send",
                        "channel": client.channel,
                        "text": f"{stamp} {i}",
                        "ref": f"b{i}",
                    }
                )
                await asyncio.sleep(interval)

        await asyncio.gather(*(talk(c) for c in clients))
        _done, pending = await asyncio.wait(listeners, timeout=RECEIVE_TIMEOUT)
        for task in pending:
            task.cancel()
        elapsed = time.perf_counter() - start
        loaded = await _process(session, metrics_urls)
        for client in clients:
            if client.ws is not None:
                await client.ws.close()
    lat = sorted(x for c in clients for x in c.latencies)
    received = sum(c.received for c in clients)
    wanted = sum(c.expected for c in clients)
    print(f"users {users}, messages sent {expected}, deliveries {received}/{wanted}")
    workers = sorted(set().union(*(c.workers for c in clients)))
    print(f"workers seen: {workers}")
    closed = [c.close_code for c in clients if c.close_code is not None]
    if closed:
        print(
            f"connections closed by the hub: {len(closed)} (codes {sorted(set(closed))}; "
            "4008 means this load tool read too slowly)"
        )
    if lat:
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"fan-out latency ms: median {statistics.median(lat) * 1000:.1f}, "
            f"p99 {p99 * 1000:.1f}, max {lat[-1] * 1000:.1f}"
        )
    print(f"deliveries per second: {received / elapsed:.0f} over {elapsed:.1f} s")
    _print_server(idle, connected, loaded, users, received, len(workers))
    return 0 if received == wanted and not pending and not closed else 1


def _print_server(
    idle: _Process | None,
    connected: _Process | None,
    loaded: _Process | None,
    users: int,
    received: int,
    workers_seen: int,
) -> None:
    """Server CPU per delivery and memory per connection, from the scraped workers' /metrics."""
    if idle is None or connected is None or loaded is None:
        print("server CPU and memory: unknown (/metrics has no process_* figures here)")
        return
    scope = f"{idle.scraped} worker(s) scraped"
    if workers_seen > idle.scraped:
        scope += (
            f" of {workers_seen} that served this run: pass each worker's URL with --metrics "
            "for the whole hub's figures"
        )
    if received:
        cpu_us = (loaded.cpu - connected.cpu) / received * 1e6
        print(f"server CPU per delivery: {cpu_us:.1f} µs ({scope})")
    per_conn = (connected.rss - idle.rss) / users / 1024
    print(
        f"server memory: {idle.rss / 2**20:.1f} MiB before, {connected.rss / 2**20:.1f} MiB "
        f"with {users} connections: {per_conn:.1f} KiB per connection ({scope})"
    )
