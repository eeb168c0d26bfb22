"""Rooms with many people: snapshots and diffs instead of whole lists, paging, bounded floods."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.conftest import HubUnderTest
from tests.support.presence_view import online_count
from tests.support.wsclient import WsClient, connect

CROWD = int(os.environ.get("CROWD", "150"))


@contextlib.asynccontextmanager
async def crowd(
    hub: HubUnderTest, room: str, count: int, prefix: str = "u"
) -> AsyncIterator[list[WsClient]]:
    """``count`` users connected at once, each sending ``join`` at once; all answered."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = list(
            await asyncio.gather(
                *(connect(session, hub.ws_url, hub.token(f"{prefix}{i:04d}")) for i in range(count))
            )
        )
        await asyncio.gather(*(c.send(type="join", room=room, ref="j") for c in clients))
        await asyncio.gather(*(c.expect("joined", room=room, timeout=30) for c in clients))
        try:
            yield clients
        finally:
            for client in clients:
                await client.close()


def told_online(frames: list[dict[str, Any]], room: str) -> int | None:
    """The room's count as presence told it (``joined`` and ``presence`` only)."""
    return online_count((f for f in frames if f["type"] in ("joined", "presence")), room)


async def page_all(client: WsClient, room: str, limit: int) -> list[str]:
    """Every online member id, asked page by page with ``members``."""
    ids: list[str] = []
    after = None
    for n in range(1000):
        frame = {"type": "members", "room": room, "limit": limit, "ref": f"m{n}"}
        if after:
            frame["after"] = after
        await client.send(**frame)
        page = await client.expect("members", ref=f"m{n}")
        ids += [m["id"] for m in page["members"]]
        if not page["more"]:
            return ids
        after = ids[-1]
    raise AssertionError("members pages never ended")


async def test_a_crowd_joining_at_once_is_all_answered_and_counted(hub: HubUnderTest) -> None:
    async with crowd(hub, "hall", CROWD) as clients:
        await check_crowd(clients)


async def check_crowd(clients: list[WsClient]) -> None:
    first = clients[0]
    joined = next(f for f in first.received if f["type"] == "joined")
    assert len(joined["members"]) <= 100
    ids = await page_all(first, "hall", 40)
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == CROWD

    # Every member's count converges to the room's, and the first member learns of everyone,
    # from its snapshot and the diffs alone (a diff's count may run ahead of its joins).
    def first_knows() -> set[str]:
        presence = [f for f in first.received if f["type"] == "presence"]
        assert all("members" not in f for f in presence), "a diff carried the whole list"
        return {m["id"] for m in joined["members"]} | {
            m["id"] for f in presence for m in f["joins"]
        }

    for _ in range(50):
        await asyncio.gather(*(c.drain(0.1) for c in clients))
        counts = {told_online(c.received, "hall") for c in clients}
        if counts == {CROWD} and first_knows() == set(ids):
            break
    assert {told_online(c.received, "hall") for c in clients} == {CROWD}
    seen = first_knows()
    assert seen == set(ids)


async def test_members_needs_membership(hub: HubUnderTest) -> None:
    ann = await hub.connect("ann")
    await ann.send(type="members", room="secret", ref="m")
    error = await ann.expect("error", ref="m")
    assert error["code"] == "forbidden"


async def test_join_leave_flooding_is_limited_and_not_amplified(hub: HubUnderTest) -> None:
    async with crowd(hub, "quiet", 50, prefix="w") as watchers:
        await check_flood(hub, watchers)


async def check_flood(hub: HubUnderTest, watchers: list[WsClient]) -> None:
    for watcher in watchers:
        await watcher.drain(0.05)
    before = [sum(len(json.dumps(f)) for f in w.received) for w in watchers]
    flooder = await hub.connect("flooder")
    sent = 0
    for n in range(60):
        frame = json.dumps({"type": "join" if n % 2 == 0 else "leave", "room": "quiet"})
        await flooder.ws.send_str(frame)
        sent += len(frame)
    frames = await flooder.drain(2.5)
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert limited and all(f["retry_after"] > 0 for f in limited)
    await asyncio.sleep(hub.settings.presence_interval * 2)
    for watcher in watchers:
        await watcher.drain(0.05)
    after = [sum(len(json.dumps(f)) for f in w.received) for w in watchers]
    per_member = max(a - b for a, b in zip(after, before, strict=True))
    # Whole member lists per event would send each member ~2 KB per join or leave.
    assert per_member <= sent, f"each member got {per_member} B for {sent} B of flooding"


async def test_a_reader_that_never_reads_is_closed_on_the_byte_budget(
    start_hub: object,
) -> None:
    hub = await start_hub(api_key="backend-key", outbound_bytes=256 * 1024, max_text=8000)  # type: ignore[operator]
    token = hub.token("sleepy")
    # A small receive buffer: the kernel may hold at most the server's send buffer (4 MiB).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (hub.server.host, hub.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0]
    writer.write(masked_text(json.dumps({"type": "hello", "token": token})))
    await writer.drain()
    await asyncio.sleep(0.3)  # the session opens; from here on nothing is ever read
    big = "x" * 8000
    headers = {"Authorization": "Bearer backend-key"}
    for _ in range(1200):  # 9.6 MB: twice the kernel's buffers and more than the budget
        async with hub.session.post(
            f"{hub.url}/api/publish", json={"channel": "dm:sleepy", "text": big}, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
    closed = False
    for _ in range(50):  # the close handshake waits (5 s) for a peer that never answers
        async with hub.session.get(f"{hub.url}/metrics") as resp:
            if "hub_slow_consumer_closes_total 1.0" in await resp.text():
                closed = True
                break
        await asyncio.sleep(0.2)
    writer.close()
    assert closed, "9.6 MB queued for a peer that never reads, and no 4008 close"
    async with hub.session.get(f"{hub.url}/health") as resp:
        assert (await resp.json())["connections"] == 0


def masked_text(text: str) -> bytes:
    """One client-to-server WebSocket text frame (clients must mask)."""
    data = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(data) < 126:
        head += bytes([0x80 | len(data)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(data))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
