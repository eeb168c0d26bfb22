"""What one Redis shard does per second here: the hub's own scripts under ``redis-benchmark``.

From the repository root: ``.venv/bin/python -m deploy.bench.redis_shard``.

Starts a private redis-server on a free port with two subscribers on the hot pub/sub channel
(two workers' worth), loads the hub's Lua scripts (``hub.broker.redis_scripts``) and runs
``redis-benchmark`` (50 connections, no pipelining, as the hub talks to Redis) on: PUBLISH,
XADD, the hub's APPEND (store + publish one message), DELTA (keep + publish one reply
delta) and RATE_TAKE (one send's rate check). Prints requests per second of each, and the
CPU time redis-server spent per call, which says what one core given to Redis alone would
serve (the benchmark client shares this machine's cores with Redis).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import redis

from deploy.bench.load import cpu_seconds
from deploy.bench.servers import start_redis
from deploy.processes import find_binary
from hub.broker import redis_scripts as lua

BODY = (
    '{"channel":"room:hot","author":{"id":"guest-1","name":"Ann","role":"user"},'
    '"text":"' + "x" * 80 + '","ts":1764160000000}'
)
PUB = "bench:pub:{room:hot}"


def scenarios(client: redis.Redis) -> dict[str, tuple[int, list[str]]]:
    """Key spread (``-r``) and command line for redis-benchmark, per scenario.

    ``__rand_int__`` spreads keys over many channels; a delta goes each time to a fresh reply's
    list as its seq 0 (the script keeps only the next seq), so nearly every call takes the
    script's full path. The arguments follow the scripts' KEYS/ARGV comments; when a script
    changes, change them here too.
    """
    append = str(client.script_load(lua.APPEND))
    delta = str(client.script_load(lua.DELTA))
    rate = str(client.script_load(lua.RATE_TAKE))
    client.hset("bench:inflight:{room:hot}", "r1", '["hub1", "{}"]')
    frame = '{"type":"delta","channel":"room:hot","reply":"r1","seq":0,"text":"' + "y" * 40 + '"}'
    return {
        "PUBLISH (2 subscribers)": (10_000, ["PUBLISH", PUB, BODY]),
        "XADD MAXLEN 1000": (
            10_000,
            ["XADD", "bench:log:__rand_int__", "MAXLEN", "1000", "*", "b", BODY],
        ),
        "EVALSHA append (store + publish a message)": (
            10_000,
            [
                "EVALSHA", append, "5",
                "bench:log:{__rand_int__}", "bench:meta:{__rand_int__}", "bench:ref:x",
                "bench:inflight:x", "bench:deltas:x",
                BODY, "message", PUB, "1000", "0", "86400000", "", "60000", "",
            ],
        ),
        "EVALSHA delta (keep + publish a reply delta)": (
            100_000_000,
            [
                "EVALSHA", delta, "2", "bench:inflight:{room:hot}", "bench:deltas:__rand_int__",
                "r1", "hub1", "0", "y" * 40, PUB, "d|0-0|r1|0|" + frame, "60000",
            ],
        ),
        "EVALSHA rate_take (a send's rate check)": (
            10_000,
            ["EVALSHA", rate, "1", "bench:rate:__rand_int__", "1000000", "1000000"],
        ),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.redis_shard", description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000, help="per command (200000)")
    parser.add_argument("--clients", type=int, default=50, help="connections (50)")
    args = parser.parse_args(argv)
    if not (1000 <= args.requests <= 2_000_000 and 1 <= args.clients <= 500):
        parser.error("keep it bounded: --requests 1000-2000000, --clients 1-500")
    bench = find_binary("redis-benchmark")
    logs = Path(tempfile.mkdtemp(prefix="hub-redis-shard-"))
    server, url = start_redis(logs, "redis")
    port = url.rsplit(":", 1)[1].split("/")[0]
    subscribers = [
        subprocess.Popen(
            [find_binary("redis-cli"), "-p", port, "SUBSCRIBE", PUB],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        print(f"redis-server {client.info('server')['redis_version']}, {args.clients} connections,")
        print(f"{args.requests} requests per command, no pipelining:\n")
        print("   requests/s   Redis CPU per call   calls/s one busy core would serve")
        pid = server.pid
        assert pid is not None
        for label, (spread, command) in scenarios(client).items():
            cpu = cpu_seconds([pid])
            out = subprocess.run(
                [bench, "-p", port, "-c", str(args.clients), "-n", str(args.requests),
                 "-r", str(spread), "-q", *command],
                capture_output=True, text=True, timeout=300, check=True,
            ).stdout  # fmt: skip
            found = re.findall(r"([\d.]+) requests per second", out)
            rps = float(found[-1]) if found else float("nan")
            per_call = (cpu_seconds([pid]) - cpu) / args.requests * 1e6
            print(f"  {rps:>10,.0f}   {per_call:8.1f} µs   {1e6 / per_call:>14,.0f}   {label}")
        client.close()
    finally:
        for sub in subscribers:
            sub.terminate()
            sub.wait(5)
        server.stop(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
