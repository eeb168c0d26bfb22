"""The hub against python-socketio (Redis manager) and a bare aiohttp broadcaster, in one run.

From the repository root, with the benchmark extra installed
(``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python -m deploy.bench.compare              # the full table, medians of 3 (~10 min)
    .venv/bin/python -m deploy.bench.compare --reps 1 --members 100 --idle 500   # a quick look

Each repetition starts every setup afresh (hub: 2 workers + a private redis-server;
python-socketio: 2 workers + a private redis-server; bare: one process) and the setups take
turns at each scenario, so they share the machine's background load alike; the order rotates
between repetitions. Everything stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from deploy.bench.load import Target, idle_memory, room_scenario
from deploy.bench.servers import running

SETUPS = ("hub", "socketio", "bare")


async def measure(
    targets: dict[str, Target], args: argparse.Namespace, rep: int
) -> dict[str, dict[str, Any]]:
    """Every figure of every setup in one repetition, setups taking turns at each scenario."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    results: dict[str, dict[str, Any]] = {name: {"failed": []} for name in targets}
    async with aiohttp.ClientSession(connector=connector) as session:
        if args.idle:
            for name, target in targets.items():
                result = results[name]
                try:
                    result["idle_bytes"] = await idle_memory(session, target, args.idle, f"i{rep}")
                    kib = result["idle_bytes"] / 1024
                    print(f"    {name} memory per idle connection: {kib:.1f} KiB", flush=True)
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    _failed(result, name, f"{args.idle} idle users", exc)
        for members in args.members:
            for name, target in targets.items():
                result = results[name]
                try:
                    figures = await room_scenario(
                        session, target, members, args.flood, args.paced, args.rate, f"r{rep}"
                    )
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    _failed(result, name, f"{members} members", exc)
                    continue
                print(f"    {name} {members} members: {_line(figures.__dict__)}", flush=True)
                if figures.complete:
                    result[str(members)] = asdict(figures)
                else:
                    _failed(result, name, f"{members} members", "not every delivery arrived")
    return results


def _failed(result: dict[str, Any], name: str, what: str, why: object) -> None:
    """A scenario that did not finish is left out of the medians, and said so."""
    reason = f"{type(why).__name__} {why}".strip() if isinstance(why, Exception) else str(why)
    result["failed"].append(f"{what}: {reason}")
    print(f"    {name} {what}: FAILED ({reason}); left out of the medians", flush=True)


def _line(fig: dict[str, Any]) -> str:
    return (
        f"flood {fig['flood_per_s'] / 1000:.1f} k/s, cpu {fig['cpu_us']:.1f} µs "
        f"(+redis {fig['broker_cpu_us']:.1f}), paced p50/p99 {fig['p50_ms']:.1f}/"
        f"{fig['p99_ms']:.1f} ms, out of order {fig['out_of_order']}, "
        f"{'complete' if fig['complete'] else 'INCOMPLETE'}, closed by server {fig['closed']}"
    )


def _median(runs: list[dict[str, Any]], *keys: str) -> float | None:
    values: list[float] = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    return "—" if value is None else f"{value / scale:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(results: dict[str, list[dict[str, Any]]], members: list[int]) -> str:
    """The comparison as a Markdown table, medians of the repetitions, with ratios."""
    rows: list[tuple[str, dict[str, float | None], int, float]] = []

    def add(label: str, keys: tuple[str, ...], digits: int = 1, scale: float = 1.0) -> None:
        rows.append((label, {s: _median(results.get(s, []), *keys) for s in SETUPS}, digits, scale))

    for n in members:
        add(f"flood deliveries/s (k), {n} members", (str(n), "flood_per_s"), 1, 1000)
    for n in members:
        add(f"server CPU per delivery (µs), flood {n}", (str(n), "cpu_us"))
    for n in members:
        add(f"Redis CPU per delivery (µs), flood {n}", (str(n), "broker_cpu_us"))
    for n in members:
        add(f"paced 20 msg/s, p99 latency (ms), {n}", (str(n), "p99_ms"))
    for n in members:
        add(f"paced 20 msg/s, p50 latency (ms), {n}", (str(n), "p50_ms"))
    for n in members:
        add(f"out-of-order deliveries per run, {n}", (str(n), "out_of_order"), 0)
    add("memory per idle connection (KiB)", ("idle_bytes",), 1, 1024)
    lines = [
        "| | hub | python-socketio | bare aiohttp | hub / bare | hub / socketio |",
        "|---|---|---|---|---|---|",
    ]
    for label, values, digits, scale in rows:
        if all(v is None for v in values.values()):
            continue
        cells = [_fmt(values[s], digits, scale) for s in SETUPS]
        ratios = [_ratio(values["hub"], values["bare"]), _ratio(values["hub"], values["socketio"])]
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def _load() -> str:
    """The machine's load average: the benchmark shares its cores with whatever else runs."""
    with open("/proc/loadavg") as handle:
        return "load average " + " ".join(handle.read().split()[:3])


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (soft < needed and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    elif soft < needed:
        sys.exit(f"need {needed} open files, the hard limit is {hard}: raise it (ulimit -Hn)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.compare", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians are shown)")
    parser.add_argument(
        "--members", type=int, nargs="+", default=[100, 500], help="room sizes (100 500)"
    )
    parser.add_argument("--flood", type=int, default=200, help="messages in the flood (200)")
    parser.add_argument("--paced", type=int, default=200, help="messages in the paced run (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="paced messages per second (20)")
    parser.add_argument(
        "--idle", type=int, default=2000, help="idle users for memory (2000; 0 skips)"
    )
    parser.add_argument("--workers", type=int, default=2, help="hub and socketio workers (2)")
    parser.add_argument("--only", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--json", type=Path, help="also write every measured figure here")
    parser.add_argument("--logs", type=Path, help="server logs folder (default: a temp folder)")
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= 10 or max(args.members) > 5000 or not 0 <= args.idle <= 20000:
        parser.error("keep it bounded: --reps 1-10, --members up to 5000, --idle up to 20000")
    try:
        import socketio  # noqa: F401
    except ImportError:
        if "socketio" in args.only:
            sys.exit("python-socketio is missing: .venv/bin/pip install -e '.[bench]'")
    _raise_fd_limit(2 * max(args.idle, *args.members) + 1000)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="hub-bench-"))
    print(f"server logs in {logs}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.only}
    started = time.monotonic()
    for rep in range(args.reps):
        order = args.only[rep % len(args.only) :] + args.only[: rep % len(args.only)]
        print(f"rep {rep + 1}/{args.reps}: {', '.join(order)}; {_load()}", flush=True)
        with contextlib.ExitStack() as stack:
            targets = {
                name: stack.enter_context(running(name, logs / f"rep{rep + 1}", args.workers))
                for name in order
            }
            for name, result in asyncio.run(measure(targets, args, rep)).items():
                results[name].append(result)
    print(f"finished; {_load()}")
    print(f"\nmedians of {args.reps} run(s), {time.monotonic() - started:.0f} s in all:\n")
    print(table(results, args.members))
    for name, runs in results.items():
        for rep, run in enumerate(runs, 1):
            for failure in run["failed"]:
                print(f"\nnot in the medians: {name}, run {rep}, {failure}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
