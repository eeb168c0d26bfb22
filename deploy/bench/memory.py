"""What one idle connection costs a server, counted by tracemalloc, hub against bare aiohttp.

From the repository root::

    .venv/bin/python -m deploy.bench.memory                 # 10,000 idle connections each
    .venv/bin/python -m deploy.bench.memory --idle 2000 --setups hub

Each setup runs in its own process under tracemalloc (the hub: one worker and a private
redis-server; bare: ``deploy.bench.bare``). After 20 warm-up connections the server dumps a
snapshot, then ``--idle`` users connect (each signed in and in a room of its own, as in
``deploy.bench.compare``), and a second snapshot is taken. Printed: traced bytes and resident
memory per connection, and the allocation sites that grew most, per line and per file.
``serve`` is the wrapper the servers run under: ``python -m deploy.bench.memory serve MODULE ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import runpy
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import FrameType

import aiohttp

from deploy.bench.load import Room, Target, rss_bytes
from deploy.bench.servers import HUB_ENV, STOP_TIMEOUT, _python_server, start_redis
from deploy.processes import ManagedProcess

SNAPSHOT_ENV = "BENCH_SNAPSHOT"
SNAPSHOT_WAIT = 120.0


def serve(argv: list[str]) -> None:
    """Run ``python -m MODULE ARGS`` traced; SIGUSR1 dumps a snapshot to $BENCH_SNAPSHOT."""
    tracemalloc.start(1)
    path = os.environ[SNAPSHOT_ENV]

    def dump(signum: int, frame: FrameType | None) -> None:
        tracemalloc.take_snapshot().dump(path + ".part")
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def _snapshot(pid: int, path: Path) -> tracemalloc.Snapshot:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + SNAPSHOT_WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot from process {pid} within {SNAPSHOT_WAIT:g} s")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(path))


def _start(setup: str, log_dir: Path, snap: Path) -> tuple[list[ManagedProcess], Target]:
    env = {SNAPSHOT_ENV: str(snap)}
    wrapper = ["deploy.bench.memory", "serve"]
    if setup == "bare":
        bare, url = _python_server(log_dir, "bare", [*wrapper, "deploy.bench.bare"], env)
        assert bare.pid is not None
        return [bare], Target(setup, "hub", [url], [bare.pid])
    redis, redis_url = start_redis(log_dir, "hub-redis")
    env |= {**HUB_ENV, "HUB_BROKER_URL": redis_url, "HUB_SECRET": "m" * 40}
    worker, url = _python_server(log_dir, "hub1", [*wrapper, "hub", "serve"], env)
    assert worker.pid is not None and redis.pid is not None
    return [redis, worker], Target(setup, "hub", [url], [worker.pid], [redis.pid])


async def measure(setup: str, idle: int, top: int, log_dir: Path) -> float:
    """Connect ``idle`` users to a fresh ``setup``; print and return traced bytes per connection."""
    snap = log_dir / f"{setup}.snapshot"
    processes, target = _start(setup, log_dir, snap)
    pid = target.server_pids[0]
    try:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            warm, users = Room(target), Room(target)
            try:
                await warm.add(session, "w", 20, ["warm"])
                await warm.quiet()
                before, rss0 = _snapshot(pid, snap), rss_bytes([pid])
                await users.add(session, "u", idle, [f"solo-{i}" for i in range(idle)])
                await users.quiet(1.0)
                after, rss1 = _snapshot(pid, snap), rss_bytes([pid])
            finally:
                await users.close()
                await warm.close()
    finally:
        for process in reversed(processes):
            process.stop(STOP_TIMEOUT)
    traced = sum(s.size for s in after.statistics("filename")) - sum(
        s.size for s in before.statistics("filename")
    )
    print(f"\n{setup}: {idle} idle connections", flush=True)
    print(f"  traced by tracemalloc: {traced / idle / 1024:.2f} KiB per connection")
    print(f"  resident (RSS, includes tracemalloc's own): {(rss1 - rss0) / idle / 1024:.2f} KiB")
    for key in ("lineno", "filename"):
        print(f"  grew most, per {key} (bytes per connection):")
        for stat in after.compare_to(before, key)[:top]:
            frame = stat.traceback[0]
            where = f"{frame.filename}:{frame.lineno}" if key == "lineno" else frame.filename
            print(f"    {stat.size_diff / idle:9.1f}  {_short(where)}")
    return traced / idle


def _short(where: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where.replace(str(Path.cwd()) + "/", "")


async def main_async(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * args.idle + 200  # the client's sockets; each server raises its own limit
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        results = {s: await measure(s, args.idle, args.top, Path(tmp)) for s in args.setups}
    print("\nper idle connection (tracemalloc):")
    for setup, size in results.items():
        print(f"  {setup:5s} {size / 1024:6.2f} KiB")
    if "hub" in results and "bare" in results:
        gap = (results["hub"] - results["bare"]) / 1024
        print(f"  hub - bare: {gap:+.2f} KiB")


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (10000)")
    parser.add_argument("--setups", nargs="+", choices=("hub", "bare"), default=["hub", "bare"])
    parser.add_argument("--top", type=int, default=12, help="allocation sites to list (12)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
