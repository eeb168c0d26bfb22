"""``hub bench``: many users in one room through a running hub; fan-out latency and throughput."""

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


@dataclass
class _Client:
    name: str
    token: str = ""
    ws: aiohttp.ClientWebSocketResponse | None = None
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    workers: set[str] = field(default_factory=set)
    close_code: int | None = None


async def _login(session: aiohttp.ClientSession, url: str, name: str) -> str:
    secret = os.environ.get("HUB_SECRET")
    if secret:  # the operator's own tokens: no guest-login limit, any room
        return mint_token(secret, "bench-" + secrets.token_hex(6), name, 3600)
    async with session.post(f"{url}/api/login", json={"name": name}) as resp:
        if resp.status != 200:
            raise SystemExit(
                f"hub bench: guest login failed ({resp.status}); set HUB_SECRET so the bench "
                "mints its own tokens (guest logins are limited per address, and guests join "
                "only HUB_GUEST_ROOMS)."
            )
        token: str = (await resp.json())["token"]
        return token


async def _connect(session: aiohttp.ClientSession, url: str, client: _Client, room: str) -> None:
    ws = await session.ws_connect(url.replace("http", "ws", 1) + "/ws", heartbeat=30)
    await ws.send_json({"type": "hello", "token": client.token})
    await ws.send_json({"type": "join", "room": room})
    while True:
        frame = json.loads((await ws.receive(timeout=RECEIVE_TIMEOUT)).data)
        if frame["type"] == "welcome":
            client.workers.add(frame["worker"])
        if frame["type"] == "joined":
            break
    client.ws = ws


async def _listen(client: _Client, expected: int, channel: str) -> None:
    assert client.ws is not None
    while client.received < expected:
        msg = await client.ws.receive(timeout=RECEIVE_TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            client.close_code = client.ws.close_code
            break
        frame = json.loads(msg.data)
        if frame.get("type") == "message" and frame.get("channel") == channel:
            sent = float(frame["text"].split(" ", 1)[0])
            client.latencies.append(time.perf_counter() - sent)
            client.received += 1


async def _rss(session: aiohttp.ClientSession, url: str) -> float | None:
    """Resident memory of the worker that answers /metrics (one worker: the whole hub)."""
    async with session.get(f"{url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1])
    return None


async def run_bench(url: str, users: int, messages: int, room: str, interval: float = 1.0) -> int:
    """Connect ``users`` to ``room``; each sends ``messages``; every member must get every one."""
    url = url.rstrip("/")
    channel = f"room:{room}"
    clients = [_Client(f"bench{i}") for i in range(users)]
    connector = aiohttp.TCPConnector(limit=0)  # one socket per simulated user, no pool cap
    async with aiohttp.ClientSession(connector=connector) as session:
        for client in clients:
            client.token = await _login(session, url, client.name)
        rss_before = await _rss(session, url)
        for i in range(0, users, 50):  # connect in waves so the hub's accept queue keeps up
            await asyncio.gather(*(_connect(session, url, c, room) for c in clients[i : i + 50]))
        rss_after = await _rss(session, url)
        expected = users * messages
        listeners = [asyncio.create_task(_listen(c, expected, channel)) for c in clients]
        start = time.perf_counter()

        async def talk(client: _Client) -> None:
            assert client.ws is not None
            for i in range(messages):
                if client.ws.closed:
                    return
                stamp = time.perf_counter()
                await client.ws.send_json(
                    {"type": "send", "channel": channel, "text": f"{stamp} {i}", "ref": f"b{i}"}
                )
                await asyncio.sleep(interval)

        await asyncio.gather(*(talk(c) for c in clients))
        _done, pending = await asyncio.wait(listeners, timeout=RECEIVE_TIMEOUT)
        for task in pending:
            task.cancel()
        elapsed = time.perf_counter() - start
        for client in clients:
            if client.ws is not None:
                await client.ws.close()
    lat = sorted(x for c in clients for x in c.latencies)
    received = sum(c.received for c in clients)
    print(f"users {users}, messages sent {expected}, deliveries {received}/{expected * users}")
    print(f"workers seen: {sorted(set().union(*(c.workers for c in clients)))}")
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
    if rss_before is not None and rss_after is not None:
        per_conn = (rss_after - rss_before) / users / 1024
        print(
            f"worker memory: {rss_before / 2**20:.1f} MiB idle, {rss_after / 2**20:.1f} MiB with "
            f"{users} connections ({per_conn:.1f} KiB per connection, one worker's view)"
        )
    return 0 if received == expected * users and not pending and not closed else 1
