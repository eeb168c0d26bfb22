"""Rooms at scale: a join storm of N users into one room across three workers and one Redis.

    .venv/bin/python -m deploy.bench.rooms --members 1000 10000

For each N it starts a private Redis and three workers (``deploy.cluster``), connects N users
straight to the workers (round robin; tokens minted with the cluster's secret), then reports:
time to fill (every member ``joined``; every member's ``online`` count at N), presence bytes
each member received per join, the ``joined`` size, Redis commands per worker per second while
the full room is idle, worker memory per connection, and the fan-out of one message to all N
(each delivered exactly once; latency p50/p99). Traffic stays on loopback; every wait is bounded.
Not a test: numbers on a shared 2-core machine are noisy, compare them within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from redis.asyncio import Redis

from deploy.cluster import Cluster
from hub.auth import mint_token

ROOM = "arena"
WAVE = 200
"""Handshakes in flight at once while connecting (the workers' accept queues keep up)."""
TIMEOUT = 600.0
"""Upper bound of any one phase."""
IDLE_SECONDS = 10.0

LIFTED = {
    "HUB_LLM": "echo",
    "HUB_MAX_CONNECTIONS_PER_IP": "1000000",
    "HUB_MAX_CONNECTIONS_PER_USER": "10",
    "HUB_GUEST_ROOMS": "*",
    "HUB_RATE": "100",
    "HUB_RATE_BURST": "100",
}
"""Per-address limits lifted: every user of the benchmark comes from 127.0.0.1."""


@dataclass
class Member:
    """One user's socket; counts what it receives without decoding the big frames twice."""

    user: str
    ws: aiohttp.ClientWebSocketResponse
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    joined_bytes: int = 0
    presence_bytes: int = 0
    online: int = 0
    message_at: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0


def _online_of(data: str) -> int:
    start = data.find('"online":') + 9
    end = start
    while end < len(data) and data[end].isdigit():
        end += 1
    return int(data[start:end] or 0)


async def _read(member: Member) -> None:
    async for msg in member.ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        data: str = msg.data
        if data.startswith('{"type":"presence"'):
            member.presence_bytes += len(data)
            member.online = _online_of(data)
        elif data.startswith('{"type":"joined"'):
            member.joined_bytes = len(data)
            member.online = _online_of(data)
            member.joined.set()
        elif data.startswith('{"type":"error"'):
            raise SystemExit(f"bench rooms: {member.user} got an error: {data:.300}")
        elif data.startswith('{"type":"message"'):
            frame = json.loads(data)
            if frame.get("channel") == f"room:{ROOM}":
                if frame["id"] in member.message_at:
                    member.duplicates += 1
                member.message_at.setdefault(frame["id"], time.monotonic())


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _redis_calls(redis: Redis) -> dict[str, int]:
    """Calls so far per Redis command (a script's own calls count too)."""
    stats = await redis.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}


async def _progress(what: str, count: Callable[[], int], total: int) -> None:
    """Print how far a long phase got every few seconds, so a stall shows where it is."""
    while True:
        await asyncio.sleep(5)
        print(f"bench rooms: {what} {count()}/{total}", file=sys.stderr, flush=True)


async def _wait(check: object, what: str, timeout: float = TIMEOUT) -> float:
    started = last = time.monotonic()
    while not check():  # type: ignore[operator]
        now = time.monotonic()
        if now - started > timeout:
            raise SystemExit(f"bench rooms: {what} did not happen within {timeout:.0f} s")
        if now - last > 5:
            last = now
            print(f"bench rooms: waiting {now - started:.0f} s for {what}", file=sys.stderr)
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def run(
    cluster: Cluster, members: int, idle_seconds: float = IDLE_SECONDS
) -> dict[str, float]:
    """One storm of ``members`` users through the running ``cluster``; returns the figures."""
    pids = [w.process.pid for w in cluster.workers if w.process.pid is not None]
    rss_before = sum(_rss_kib(pid) for pid in pids)
    gate = asyncio.Semaphore(WAVE)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        readers: list[asyncio.Task[None]] = []

        async def connect(i: int) -> Member:
            user = f"m{i:06d}"
            worker = cluster.worker(i % len(cluster.workers))
            async with gate:
                ws = await session.ws_connect(worker.ws_url, max_msg_size=0, heartbeat=None)
                await ws.send_str(
                    json.dumps(
                        {"type": "hello", "token": mint_token(cluster.secret, user, user, 7200)}
                    )
                )
                welcome = await ws.receive(timeout=60)
                if '"welcome"' not in str(welcome.data):
                    raise SystemExit(f"bench rooms: {user} got no welcome: {welcome.data!r:.200}")
            member = Member(user, ws)
            # Read from the start: a socket that never answers the server's pings is dropped.
            readers.append(asyncio.create_task(_read(member)))
            return member

        # Each member connected has its reader: their count is the progress.
        progress = asyncio.create_task(_progress("connected", lambda: len(readers), members))
        try:
            crowd = list(await asyncio.gather(*(connect(i) for i in range(members))))
        finally:
            progress.cancel()
        await asyncio.sleep(2)
        rss_connected = sum(_rss_kib(pid) for pid in pids)

        started = time.monotonic()
        for m in crowd:
            await m.ws.send_str(json.dumps({"type": "join", "room": ROOM}))
        all_joined = await _wait(lambda: all(m.joined.is_set() for m in crowd), "every joined")
        counted = await _wait(lambda: all(m.online == members for m in crowd), "online == N")
        filled = time.monotonic() - started
        await asyncio.sleep(2)
        rss_full = sum(_rss_kib(pid) for pid in pids)

        redis = Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            calls = await _redis_calls(redis)
            await asyncio.sleep(idle_seconds)
            after = await _redis_calls(redis)
            spent = {k: n - calls.get(k, 0) for k, n in after.items() if n > calls.get(k, 0)}
            spent["cmdstat_info"] = spent.get("cmdstat_info", 1) - 1  # the bench's own
            idle = sum(spent.values()) / len(pids) / idle_seconds
            print(
                f"bench rooms: idle Redis commands in {idle_seconds:.0f} s: {spent}",
                file=sys.stderr,
            )
        finally:
            await redis.aclose()

        sender = crowd[0]
        sent_at = time.monotonic()
        await sender.ws.send_str(
            json.dumps({"type": "send", "channel": f"room:{ROOM}", "text": "fan-out", "ref": "f"})
        )
        await _wait(lambda: all(m.message_at for m in crowd), "the message reached everyone", 120)
        latencies = sorted((min(m.message_at.values()) - sent_at) * 1000 for m in crowd)
        duplicates = sum(m.duplicates for m in crowd)

        presence = sum(m.presence_bytes for m in crowd)
        for m in crowd:
            await m.ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {
        "members": members,
        "joined_s": all_joined,
        "filled_s": filled,
        "counted_s": counted,
        "bytes_per_member_per_join": presence / members / members,
        "joined_max_bytes": max(m.joined_bytes for m in crowd),
        "idle_redis_cmds_per_worker_s": idle,
        "kib_per_connection": (rss_connected - rss_before) / members,
        "kib_per_member_in_room": (rss_full - rss_before) / members,
        "fanout_p50_ms": statistics.median(latencies),
        "fanout_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "fanout_delivered": sum(1 for m in crowd if m.message_at),
        "fanout_duplicates": duplicates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.rooms", description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    results = []
    for members in args.members:
        with Cluster(args.workers, env=LIFTED, start_timeout=60, keep_run_dir=args.keep) as cluster:
            if args.keep:
                print(f"bench rooms: logs in {cluster.log_dir}", file=sys.stderr)
            results.append(asyncio.run(run(cluster, members)))
            print(json.dumps(results[-1]), flush=True)
    keys = list(results[0])
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in results:
        print(
            "| "
            + " | ".join(
                f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys
            )
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
