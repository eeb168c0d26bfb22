"""Where a hub worker's CPU goes while it fans out: py-spy samples one worker under a flood.

From the repository root, with the benchmark extra installed::

    .venv/bin/python -m deploy.bench.profile                 # 2 workers + Redis, 200 members
    .venv/bin/python -m deploy.bench.profile --members 500 --floods 5 --out /tmp/hub.txt

It starts the hub as the comparison does, puts ``--members`` users in one room (spread over
both workers), attaches ``py-spy record`` to the first worker, sends ``--floods`` floods of
200 messages, and prints the functions that hold the most samples, by self time and by
total time, plus self time per package. The raw collapsed stacks stay in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp

from deploy.bench.load import Room, Target
from deploy.bench.servers import running


async def load(target: Target, args: argparse.Namespace, spy: list[str]) -> int:
    """Floods into one room with ``spy`` recording only while they run; the deliveries."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        room = Room(target)
        try:
            await room.add(session, "prof", args.members, ["profile"])
            await room.quiet()
            record = await asyncio.create_subprocess_exec(
                *spy, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            total = 0
            before = _cpu(target.server_pids[0])
            try:
                for flood in range(args.floods):
                    run = room.begin(f"flood{flood}", args.messages, latency=False)
                    for seq in range(args.messages):  # a sender per flood: 50 frames/s each
                        await room.send("profile", run, seq, sender=flood % args.members)
                    await room.finish(run)
                    total += run.received
            finally:
                record.send_signal(signal.SIGINT)
                try:
                    _, err = await asyncio.wait_for(record.communicate(), 30)
                except TimeoutError:
                    record.kill()
                    err = b""
            if record.returncode not in (0, -signal.SIGINT):
                print(f"py-spy ended with {record.returncode}: {err.decode(errors='replace')}")
            user, system = (b - a for a, b in zip(before, _cpu(target.server_pids[0]), strict=True))
            local = total * ((args.members + 1) // 2) // args.members  # members i on worker i % 2
            print(
                f"worker 1 delivered about {local} frames: per delivery {user / local * 1e6:.1f} µs "
                f"user + {system / local * 1e6:.1f} µs system (kernel: sends, epoll) CPU, "
                "py-spy running alongside"
            )
            return total
        finally:
            await room.close()


SYSCALL_LEAVES = {"_SelectorSocketTransport.write", "EpollSelector.select", "socket.send"}


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _frame_name(frame: str) -> tuple[str, str]:
    """("function (path:line)") → (function, short path)."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return name, path


def summarize(raw: Path, top: int) -> str:
    """Self and total samples per function, and self samples per file, from collapsed stacks."""
    self_time: Counter[str] = Counter()
    user_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    per_file: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame_name(f) for f in stack.split(";")]
        labels = [f"{name} ({path})" for name, path in frames]
        self_time[labels[-1]] += count
        if frames[-1][0] not in SYSCALL_LEAVES:
            user_time[labels[-1]] += count
        per_file[frames[-1][1]] += count
        for label in set(labels):
            total_time[label] += count
    if not samples:
        return "no samples (is py-spy allowed to attach? it needs ptrace rights)"
    out = [f"{samples} samples of the worker while it was busy\n", "self time, top functions:"]
    out += [f"  {n / samples:6.1%}  {label}" for label, n in self_time.most_common(top)]
    in_python = sum(user_time.values()) or 1
    out.append(
        "\nself time outside the system-call leaves (socket writes, epoll), which on a shared"
        "\nmachine also hold the time the worker waits for a core after waking a peer:"
    )
    out += [f"  {n / in_python:6.1%}  {label}" for label, n in user_time.most_common(top)]
    out.append("\nself time per file:")
    out += [f"  {n / samples:6.1%}  {path}" for path, n in per_file.most_common(top)]
    out.append("\ntotal time (function and what it calls), top functions:")
    out += [f"  {n / samples:6.1%}  {label}" for label, n in total_time.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.profile", description=__doc__)
    parser.add_argument("--members", type=int, default=200, help="room size (200)")
    parser.add_argument("--floods", type=int, default=10, help="floods of --messages (10)")
    parser.add_argument("--messages", type=int, default=200, help="messages per flood (200)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (250)")
    parser.add_argument("--top", type=int, default=30, help="lines per list (30)")
    parser.add_argument("--out", type=Path, help="collapsed stacks (default: a temp file)")
    args = parser.parse_args(argv)
    if not (1 <= args.members <= 2000 and 1 <= args.floods <= 50 and 1 <= args.messages <= 1000):
        parser.error("keep it bounded: --members 1-2000, --floods 1-50, --messages 1-1000")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy is missing: .venv/bin/pip install -e '.[bench]'")
    logs = Path(tempfile.mkdtemp(prefix="hub-profile-"))
    out = args.out or logs / "stacks.txt"
    with running("hub", logs) as target:
        pid = target.server_pids[0]
        command = [
            spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
            "--function", "--nonblocking", "--output", str(out),
        ]  # fmt: skip
        deliveries = asyncio.run(load(target, args, command))
    print(f"{deliveries} deliveries over 2 workers; worker 1 (pid {pid}) sampled into {out}\n")
    print(summarize(out, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
