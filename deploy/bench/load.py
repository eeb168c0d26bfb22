"""One load generator for every server under test: N members in a room, a flood, a paced run.

Hub and bare broadcaster speak the hub's JSON frames; python-socketio speaks Engine.IO 4 /
Socket.IO 5 packets over a plain WebSocket. Only the few lines that frame a packet differ
(:class:`Dialect`); connecting, sending, counting and timing are one code path.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

TIMEOUT = 60.0
"""Upper bound for any one wait (a connect, a run to complete, the room to go quiet)."""
WAVE = 25
"""Connections opened at once, so the servers' accept queues keep up."""
PAD = "x" * 60
"""Makes a message about as long as a chat line."""

DialectName = Literal["hub", "socketio"]


@dataclass
class Target:
    """A running server under test: where to connect and which processes to measure."""

    name: str
    dialect: DialectName
    urls: list[str]
    server_pids: list[int]
    broker_pids: list[int] = field(default_factory=list)


class Dialect:
    """How one server frames login, join, send and a delivered message."""

    def __init__(self, name: DialectName) -> None:
        self.name = name

    async def open(
        self, session: aiohttp.ClientSession, base: str, user: str, room: str
    ) -> aiohttp.ClientWebSocketResponse:
        """Sign in, connect and join ``room``; returns once the server confirmed the join."""
        ws_base = base.replace("http", "ws", 1)
        if self.name == "hub":
            async with session.post(f"{base}/api/login", json={"name": user}) as resp:
                resp.raise_for_status()
                token = (await resp.json())["token"]
            ws = await session.ws_connect(f"{ws_base}/ws", max_msg_size=0)
            await ws.send_str(json.dumps({"type": "hello", "token": token}))
            await ws.send_str(json.dumps({"type": "join", "room": room}))
            await _until(ws, lambda data: data.startswith('{"type":"joined"'))
            return ws
        ws = await session.ws_connect(
            f"{ws_base}/socket.io/?EIO=4&transport=websocket", max_msg_size=0
        )
        await _until(ws, lambda data: data.startswith("0"))  # Engine.IO open
        await ws.send_str("40" + json.dumps({"name": user}))  # Socket.IO connect, with auth
        await _until(ws, lambda data: data.startswith("40"))
        await ws.send_str("42" + json.dumps(["join", {"room": room}]))
        await _until(ws, lambda data: data.startswith('42["joined"'))
        return ws

    def send_frame(self, room: str, text: str, ref: str) -> str:
        body = {"channel": f"room:{room}", "text": text, "ref": ref}
        if self.name == "hub":
            return json.dumps({"type": "send", **body})
        return "42" + json.dumps(["send", body])

    def message_text(self, data: str) -> str | None:
        """The text of a delivered chat message, None for any other frame."""
        if self.name == "hub":
            # Read the head only: presence frames of a big room are large and many.
            if data.startswith('{"type":"message"'):
                return json.loads(data)["text"]  # type: ignore[no-any-return]
            return None
        if data.startswith('42["message"'):
            return json.loads(data[2:])[1]["text"]  # type: ignore[no-any-return]
        return None


async def _until(ws: aiohttp.ClientWebSocketResponse, wanted: object) -> None:
    """Read frames (answering Engine.IO pings) until ``wanted(data)`` holds."""
    assert callable(wanted)
    deadline = time.monotonic() + TIMEOUT
    while True:
        msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.001))
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"connection ended while joining: {msg.type.name} {msg.data}")
        if msg.data == "2":
            await ws.send_str("3")
        elif wanted(msg.data):
            return


@dataclass
class Run:
    """One batch of messages every member must receive: counts, order and latency."""

    tag: str
    expected: int
    members: int
    latency: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    complete: int = 0
    received: int = 0
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Member:
    """One simulated user's connection and what it saw of the current run."""

    ws: aiohttp.ClientWebSocketResponse
    run: Run | None = None
    seen: int = 0
    last_seq: int = -1
    closed_by_server: int | None = None


class Room:
    """N members of one room on a target, each reading frames in its own task."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.dialect = Dialect(target.dialect)
        self.members: list[Member] = []
        self.readers: list[asyncio.Task[None]] = []
        self.last_frame = time.monotonic()

    async def add(
        self, session: aiohttp.ClientSession, prefix: str, count: int, rooms: Sequence[str]
    ) -> None:
        """``count`` users ``prefix<i>``, user i in ``rooms[i % len(rooms)]`` on worker i % W.

        Each reads from the moment it joined, so join chatter never backs up into the server.
        """
        urls = self.target.urls
        for start in range(0, count, WAVE):
            batch = range(start, min(start + WAVE, count))
            sockets = await asyncio.gather(
                *(
                    asyncio.wait_for(
                        self.dialect.open(
                            session, urls[i % len(urls)], f"{prefix}{i}", rooms[i % len(rooms)]
                        ),
                        TIMEOUT,
                    )
                    for i in batch
                )
            )
            for ws in sockets:
                member = Member(ws)
                self.members.append(member)
                self.readers.append(asyncio.create_task(self._read(member)))

    async def _read(self, member: Member) -> None:
        dialect = self.dialect
        async for msg in member.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            self.last_frame = time.monotonic()
            if msg.data == "2":
                await member.ws.send_str("3")
                continue
            text = dialect.message_text(msg.data)
            run = member.run
            if text is None or run is None:
                continue
            tag, seq_text, stamp = text.split(" ", 3)[:3]
            if tag != run.tag:
                continue
            seq = int(seq_text)
            if seq < member.last_seq:
                run.out_of_order += 1
            member.last_seq = max(member.last_seq, seq)
            member.seen += 1
            run.received += 1
            if run.latency:
                run.latencies.append(now - float(stamp))
            if member.seen == run.expected:
                run.complete += 1
                if run.complete == run.members:
                    run.done.set()
        member.closed_by_server = member.ws.close_code

    async def quiet(self, seconds: float = 0.5) -> None:
        """Wait until no frame arrived for ``seconds`` (join and presence chatter is over)."""
        deadline = time.monotonic() + TIMEOUT
        for _ in range(int(TIMEOUT / 0.1)):  # polled: frames come too often to signal each
            if time.monotonic() - self.last_frame >= seconds or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    def begin(self, tag: str, expected: int, latency: bool) -> Run:
        run = Run(tag, expected, len(self.members), latency)
        for member in self.members:
            member.run, member.seen, member.last_seq = run, 0, -1
        return run

    async def send(self, room: str, run: Run, seq: int, sender: int = 0) -> None:
        """Message ``seq`` of ``run`` from member ``sender``, stamped with the time it left."""
        text = f"{run.tag} {seq} {time.perf_counter():.6f} {PAD}"
        frame = self.dialect.send_frame(room, text, f"{run.tag}-{seq}")
        await self.members[sender].ws.send_str(frame)

    async def finish(self, run: Run) -> bool:
        """Wait for every member to have every message; False if that did not happen in time."""
        try:
            await asyncio.wait_for(run.done.wait(), TIMEOUT)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for i in range(0, len(self.members), 200):
            await asyncio.gather(
                *(asyncio.wait_for(m.ws.close(), 5.0) for m in self.members[i : i + 200]),
                return_exceptions=True,
            )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)

    def closed_by_server(self) -> list[int]:
        return [m.closed_by_server for m in self.members if m.closed_by_server is not None]


# --------------------------------------------------------------------------- process figures

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (all their threads) so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / _TICK


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of the processes, summed."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


# --------------------------------------------------------------------------- scenarios


@dataclass
class RoomFigures:
    """What one room size measured on one target."""

    members: int
    flood_per_s: float
    cpu_us: float
    broker_cpu_us: float
    p99_ms: float
    p50_ms: float
    out_of_order: int
    complete: bool
    closed: int


async def room_scenario(
    session: aiohttp.ClientSession,
    target: Target,
    members: int,
    flood: int = 200,
    paced: int = 100,
    rate: float = 20.0,
    tag: str = "r",
) -> RoomFigures:
    """N members in one room: a flood of ``flood`` messages, then ``paced`` at ``rate`` per s."""
    room_name = f"bench-{tag}-{members}"
    room = Room(target)
    try:
        await room.add(session, f"{tag}m{members}u", members, [room_name])
        await room.quiet()
        run = room.begin(f"{tag}f{members}", flood, latency=False)
        cpu0, bcpu0 = cpu_seconds(target.server_pids), cpu_seconds(target.broker_pids)
        start = time.perf_counter()
        for seq in range(flood):
            await room.send(room_name, run, seq)
        flood_ok = await room.finish(run)
        elapsed = time.perf_counter() - start
        cpu1, bcpu1 = cpu_seconds(target.server_pids), cpu_seconds(target.broker_pids)
        deliveries = max(run.received, 1)
        flood_run = run

        await room.quiet()
        run = room.begin(f"{tag}p{members}", paced, latency=True)
        start = time.perf_counter()
        for seq in range(paced):
            await asyncio.sleep(max(0.0, start + seq / rate - time.perf_counter()))
            await room.send(room_name, run, seq)
        paced_ok = await room.finish(run)
        lat = sorted(run.latencies) or [float("nan")]
        return RoomFigures(
            members=members,
            flood_per_s=flood_run.received / elapsed,
            cpu_us=(cpu1 - cpu0) / deliveries * 1e6,
            broker_cpu_us=(bcpu1 - bcpu0) / deliveries * 1e6,
            p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            p50_ms=lat[len(lat) // 2] * 1000,
            out_of_order=flood_run.out_of_order + run.out_of_order,
            complete=flood_ok and paced_ok,
            closed=len(room.closed_by_server()),
        )
    finally:
        await room.close()


async def idle_memory(
    session: aiohttp.ClientSession, target: Target, users: int, tag: str = "i"
) -> float:
    """Bytes of server memory per idle connection: ``users`` users, each in a room of its own."""
    warm, idle = Room(target), Room(target)
    try:
        await warm.add(session, f"{tag}w", 20, [f"{tag}-warm"])
        await warm.quiet()
        before = rss_bytes(target.server_pids)
        await idle.add(session, f"{tag}u", users, [f"{tag}-solo-{i}" for i in range(users)])
        await idle.quiet(1.0)
        after = rss_bytes(target.server_pids)
    finally:
        await idle.close()
        await warm.close()
    return (after - before) / users
