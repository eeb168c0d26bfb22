#!/usr/bin/env python3
"""Takeover latency: kill -9 the worker generating a reply, N times, and time until a watching
client on another worker receives the reply's next delta (from the worker that took it over).

    .venv/bin/python deploy/takeover_latency.py [--kills 20] [--worker-ttl 2.5]

Starts its own cluster (redis-server, three workers, nginx on free ports); prints one line per
kill and then p50 / max. The numbers include the client's and nginx's share, on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.cluster import Cluster
from hub.auth import mint_token
from hub.client import HubClient

WORKERS = ("hub1", "hub2", "hub3")


async def client_on(cluster: Cluster, user: str, worker: str, tries: int = 30) -> HubClient:
    """A client through nginx whose welcome came from ``worker`` (round robin: a few tries)."""
    token = mint_token(cluster.secret, user, user, 3600)
    for _ in range(tries):
        client = HubClient(cluster.url, token, backoff_max=1.0)
        await client.connect(timeout=20)
        if client.workers[-1] == worker:
            return client
        await client.close()
    raise RuntimeError(f"no welcome from {worker} in {tries} tries")


def max_seq(client: HubClient, channel: str) -> int:
    return max(
        (int(f["seq"]) for f in client.raw if f.get("type") == "delta" and f["channel"] == channel),
        default=-1,
    )


async def until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.005)


async def one_kill(cluster: Cluster, victim: int, round_no: int) -> float:
    """Seconds from the kill to the next delta a watcher on another worker receives."""
    user = f"lat{round_no}"
    channel = f"dm:{user}"
    asker = await client_on(cluster, user, WORKERS[victim])
    watcher = await client_on(cluster, user, WORKERS[(victim + 1) % 3])
    try:
        text = " ".join(f"w{i}" for i in range(400))  # about 8 s of streaming
        await asker.send(text, channel)
        await until(lambda: max_seq(watcher, channel) >= 3)
        await asyncio.to_thread(cluster.kill_worker, victim)
        killed = time.monotonic()
        await asyncio.sleep(0.1)  # frames already on their way from the dead worker
        seen = max_seq(watcher, channel)
        await until(lambda: max_seq(watcher, channel) > seen)
        return time.monotonic() - killed
    finally:
        await watcher.close()
        await asker.close()
        await asyncio.to_thread(cluster.start_worker, victim)


async def measure(kills: int, worker_ttl: float) -> list[float]:
    env = {"HUB_LLM": "echo", "HUB_ECHO_DELAY": "0.02", "HUB_WORKER_TTL": str(worker_ttl)}
    with Cluster(3, env=env, start_timeout=30) as cluster:
        out = []
        for n in range(kills):
            seconds = await one_kill(cluster, n % 3, n)
            out.append(seconds)
            print(
                f"kill {n + 1:2d} of hub{n % 3 + 1}: next delta after {seconds:.2f} s", flush=True
            )
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--worker-ttl", type=float, default=2.5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.kills, args.worker_ttl))
    print(
        f"TAKEOVER latency over {len(results)} kills (HUB_WORKER_TTL={args.worker_ttl}): "
        f"p50 {statistics.median(results):.2f} s, max {max(results):.2f} s, "
        f"min {min(results):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
