#!/usr/bin/env python3
"""One Redis vs a 3-master Redis Cluster under the same hub load, side by side in one run.

Three workers behind nginx (``deploy.cluster.Cluster``), echo assistant, first on one
redis-server, then on a Redis Cluster of 3 masters + 3 replicas; on each, ``hub bench`` with
room traffic (users dealt over several rooms) and with dm traffic (each user with the
assistant). Reported per run: deliveries and deliveries/s, fan-out latency p50/p99 (from
``hub bench``'s output), and per Redis node the CPU seconds it used and the PUBLISH/SPUBLISH it
ran (scripts included), which shows whether channel traffic divides across shards.

From the repository root, with the project's virtualenv::

    .venv/bin/python deploy/bench_redis.py [--users 60] [--messages 10] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script: make the `deploy` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.cluster import REPO_ROOT, Cluster
from deploy.redis_cluster import redis_call

ENV = {
    "HUB_LLM": "echo",
    "HUB_ECHO_DELAY": "0.01",
    "HUB_RATE": "20",
    "HUB_RATE_BURST": "20",
    "HUB_DRAIN_TIMEOUT": "3",
    # The load comes from one address, and in dms every message asks for a reply.
    "HUB_MAX_CONNECTIONS_PER_IP": "100000",
    "HUB_MAX_REPLIES_PER_USER": "100",
    "HUB_MAX_REPLIES_PER_ROOM": "100",
    "HUB_MAX_REPLIES_PER_WORKER": "10000",
}


@dataclass
class NodeUse:
    """What one Redis node did during a run."""

    port: int
    role: str
    cpu: float
    publish: int
    spublish: int


def _node_counters(port: int, password: str) -> tuple[float, int, int]:
    """CPU seconds so far and PUBLISH / SPUBLISH calls so far of the node at ``port``."""
    text = str(redis_call(port, "INFO", "cpu", password=password)) + str(
        redis_call(port, "INFO", "commandstats", password=password)
    )
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def calls(command: str) -> int:
        return int(values.get(f"cmdstat_{command}", "calls=0").split(",")[0].split("=")[1])

    cpu = float(values.get("used_cpu_sys", 0)) + float(values.get("used_cpu_user", 0))
    return cpu, calls("publish"), calls("spublish")


def _nodes(cluster: Cluster) -> list[tuple[int, str]]:
    if cluster.redis_nodes is None:
        return [(cluster.redis_port, "single")]
    masters = set(cluster.redis_nodes.masters_ports())
    return [(p, "master" if p in masters else "replica") for p in cluster.redis_nodes.ports]


def _bench(cluster: Cluster, args: argparse.Namespace, dm: bool) -> dict[str, float]:
    """Run ``hub bench`` against the cluster; the numbers it printed."""
    argv = [sys.executable, "-m", "hub", "bench", "--url", cluster.url]
    argv += ["--users", str(args.users), "--messages", str(args.messages)]
    argv += ["--interval", str(args.interval), "--rooms", str(args.rooms)]
    argv += ["--dm"] if dm else []
    for worker in cluster.workers:
        argv += ["--metrics", worker.url]
    env = {**os.environ, "HUB_SECRET": cluster.secret}  # it mints its users' tokens
    done = subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    out = done.stdout
    patterns = {
        "received": r"deliveries (\d+)/\d+",
        "expected": r"deliveries \d+/(\d+)",
        "p50": r"median ([\d.]+)",
        "p99": r"p99 ([\d.]+)",
        "rate": r"deliveries per second: (\d+)",
        "cpu_us": r"server CPU per delivery: ([\d.]+)",
    }
    found = {key: re.search(pattern, out) for key, pattern in patterns.items()}
    if not all(found.values()):  # a run with missing deliveries still reports its numbers
        raise SystemExit(f"hub bench failed ({done.returncode}):\n{out}\n{done.stderr[-2000:]}")
    return {key: float(match.group(1)) for key, match in found.items() if match}


def _run(cluster: Cluster, args: argparse.Namespace, dm: bool) -> str:
    nodes = _nodes(cluster)
    before = {port: _node_counters(port, cluster.redis_password) for port, _ in nodes}
    numbers = _bench(cluster, args, dm)
    use = []
    for port, role in nodes:
        cpu, pub, spub = _node_counters(port, cluster.redis_password)
        cpu0, pub0, spub0 = before[port]
        use.append(NodeUse(port, role, cpu - cpu0, pub - pub0, spub - spub0))
    masters = [u for u in use if u.role != "replica"]
    replicas = [u for u in use if u.role == "replica"]
    cpus = " / ".join(f"{u.cpu:.2f}" for u in masters)
    if replicas:
        cpus += " (replicas " + " / ".join(f"{u.cpu:.2f}" for u in replicas) + ")"
    kind = "SPUBLISH" if sum(u.spublish for u in use) else "PUBLISH"
    pubs = " / ".join(str(u.publish + u.spublish) for u in masters) + f" {kind}"
    setup = "Redis Cluster 3+3" if cluster.redis_nodes is not None else "one Redis"
    traffic = "dm" if dm else f"{args.rooms} rooms"
    return (
        f"| {setup} | {traffic} | {numbers['received']:.0f} / {numbers['expected']:.0f} | "
        f"{numbers['rate']:.0f} | {numbers['p50']:.0f} / {numbers['p99']:.0f} ms | "
        f"{numbers['cpu_us']:.0f} µs | {cpus} | {pubs} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--messages", type=int, default=10, help="messages per user")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between sends")
    parser.add_argument("--rooms", type=int, default=6, help="rooms the users are dealt over")
    args = parser.parse_args(argv)
    rows = []
    for clustered in (False, True):
        with Cluster(3, env=ENV, redis_cluster=clustered) as cluster:
            for dm in (False, True):
                rows.append(_run(cluster, args, dm))
                print(rows[-1], flush=True)
    print(
        f"\n{args.users} users × {args.messages} messages, one every {args.interval:g} s; "
        "3 workers + nginx, echo assistant\n"
        "| Redis | traffic | deliveries | deliveries/s | latency p50 / p99 | "
        "worker CPU per delivery | Redis CPU s per master | pub/sub commands per master |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
