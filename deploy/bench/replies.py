"""What one streamed reply delta costs the hub: workers' and Redis's CPU per delta delivered.

From the repository root: ``.venv/bin/python -m deploy.bench.replies``.

Starts the hub as the comparison does (2 workers, a private Redis, the offline echo
assistant with its default pacing: a word every 50 ms, a delta at most every 40 ms), signs
in ``--users`` users, each in a room of its own, and has each ask the assistant to repeat
``--words`` words at once; every delta reaches one connection. Prints the CPU time of the
workers and of Redis per delta, with the reply's own start and end (history, the stored
reply) spread over its deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from deploy.bench.load import TIMEOUT, Room, Target, cpu_seconds
from deploy.bench.servers import running


async def replies(target: Target, users: int, words: int) -> tuple[int, float, float, float]:
    """Deltas received, workers' CPU s, Redis CPU s, wall s while the replies streamed."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        room = Room(target)
        await room.add(session, "ask", users, [f"ask-{i}" for i in range(users)])
        await room.quiet()
        for task in room.readers:  # this scenario reads the sockets itself
            task.cancel()
        await asyncio.gather(*room.readers, return_exceptions=True)
        text = "@assistant " + " ".join(f"w{i}" for i in range(words))
        cpu0, redis0 = cpu_seconds(target.server_pids), cpu_seconds(target.broker_pids)
        start = time.perf_counter()

        async def ask(index: int) -> int:
            ws = room.members[index].ws
            await ws.send_str(room.dialect.send_frame(f"ask-{index}", text, f"ask{index}"))
            deltas = 0
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=TIMEOUT)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                if msg.data.startswith('{"type":"delta"'):
                    deltas += 1
                elif msg.data.startswith('{"type":"done"'):
                    break
                elif msg.data.startswith('{"type":"error"'):
                    print(f"user {index}: {msg.data}")
                    break
            return deltas

        counts = await asyncio.gather(*(ask(i) for i in range(users)))
        wall = time.perf_counter() - start
        cpu = cpu_seconds(target.server_pids) - cpu0
        redis_cpu = cpu_seconds(target.broker_pids) - redis0
        await room.close()
        return sum(counts), cpu, redis_cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.replies", description=__doc__)
    parser.add_argument("--users", type=int, default=100, help="replies at once (100)")
    parser.add_argument("--words", type=int, default=100, help="words per reply (100)")
    args = parser.parse_args(argv)
    if not (1 <= args.users <= 2000 and 1 <= args.words <= 1000):
        parser.error("keep it bounded: --users 1-2000, --words 1-1000")
    with running("hub", Path(tempfile.mkdtemp(prefix="hub-replies-"))) as target:
        deltas, cpu, redis_cpu, wall = asyncio.run(replies(target, args.users, args.words))
    if not deltas:
        print("no delta arrived; see the hub's logs")
        return 1
    print(f"{args.users} replies of {args.words} words at once, {deltas} deltas in {wall:.1f} s")
    print(
        f"workers' CPU per delta: {cpu / deltas * 1e6:.0f} µs; Redis's: {redis_cpu / deltas * 1e6:.0f} µs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
