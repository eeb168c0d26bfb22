"""Chaos: three workers behind nginx, Redis with AOF, a dozen users with two tabs each talking in
dms and rooms (often to the assistant) for about 55 s, while a seeded schedule kills -9,
SIGTERMs and SIGSTOPs workers and crashes Redis. Afterwards everything is counted from the raw
frames each tab received and from the stored history.

The seed is printed (``CHAOS seed=…``); ``CHAOS_SEED=<seed>`` replays a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from deploy.cluster import Cluster
from hub.protocol import parse_id
from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import (
    FAULT_COUNTS,
    REPORTED,
    E2EClient,
    close_all,
    history_all,
    send_reliably,
    settle,
    wait_until,
)

pytestmark = pytest.mark.slow

USERS = 12
TABS = 2
ROOMS = ("alpha", "beta", "gamma")
TRAFFIC = 55.0
"""Seconds of traffic; faults stop a few seconds before it ends."""
FAULT_EVERY = (5.0, 7.0)
FAULT_KINDS = ("kill9", "sigterm", "sigstop", "redis")


@dataclass
class Ledger:
    """What the senders know: every acknowledged send, and which of them asked the assistant."""

    acked: dict[str, tuple[str, str]] = field(default_factory=dict)
    """ref → (channel, id)."""
    asks: Counter[str] = field(default_factory=Counter)
    """channel → acknowledged sends that ask the assistant."""
    faults: list[str] = field(default_factory=list)


def rooms_of(index: int) -> list[str]:
    """Each user is in one or two rooms."""
    return [ROOMS[index % 3]] + ([ROOMS[(index + 1) % 3]] if index % 2 else [])


async def talk(
    rng: random.Random, user: str, tab: E2EClient, rooms: list[str], ledger: Ledger, end: float
) -> None:
    """Send until ``end`` (loop time): dms (answered) and room messages (some @assistant)."""
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < end:
        n += 1
        words = " ".join(f"{user}w{n}.{i}" for i in range(rng.randint(4, 40)))
        if rng.random() < 0.35:
            channel, text, asks = f"dm:{user}", words, True
        else:
            asks = rng.random() < 0.25
            channel = f"room:{rng.choice(rooms)}"
            text = ("@assistant " if asks else "") + words
        ref = f"{user}-{n}"
        message_id = await send_reliably(tab, text, channel, ref, timeout=60.0)
        ledger.acked[ref] = (channel, message_id)
        if asks:
            ledger.asks[channel] += 1
        await asyncio.sleep(rng.uniform(1.0, 2.5))


async def faults(rng: random.Random, cluster: Cluster, ledger: Ledger, end: float) -> None:
    """One fault at a time, each kind at least once, until ``end``; every one is undone."""
    loop = asyncio.get_running_loop()
    kinds = list(FAULT_KINDS)
    rng.shuffle(kinds)
    while True:
        await asyncio.sleep(rng.uniform(*FAULT_EVERY))
        if loop.time() > end:
            return
        kind = kinds.pop(0) if kinds else rng.choice(FAULT_KINDS)
        worker = rng.randrange(3)
        at = round(loop.time() - (end - TRAFFIC + 8), 1)
        ledger.faults.append(f"{at}s {kind}" + ("" if kind == "redis" else f" hub{worker + 1}"))
        if kind == "kill9":
            await asyncio.to_thread(cluster.kill_worker, worker)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await asyncio.to_thread(cluster.start_worker, worker)
        elif kind == "sigterm":
            await asyncio.to_thread(cluster.terminate_worker, worker)
            await asyncio.to_thread(cluster.start_worker, worker)
        elif kind == "sigstop":
            cluster.signal_worker(worker, signal.SIGSTOP)
            await asyncio.sleep(rng.uniform(3.5, 5.0))  # longer than HUB_WORKER_TTL
            cluster.signal_worker(worker, signal.SIGCONT)
        else:
            await asyncio.to_thread(cluster.kill_redis)
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            await asyncio.to_thread(cluster.start_redis)
        await asyncio.to_thread(cluster.wait_healthy, 30)


def stored_ids(frames: list[dict[str, Any]], channel: str) -> list[str]:
    return [
        str(f["id"])
        for f in frames
        if f.get("type") in ("message", "done") and f.get("channel") == channel
    ]


def where(tab: E2EClient, message_id: str) -> list[str]:
    """Connection index, worker and frame type of each frame of a stored message (to debug)."""
    out = []
    for index, frames in enumerate(tab.connections()):
        for frame in frames:
            if frame.get("id") == message_id and frame.get("type") in ("message", "done"):
                at = frames.index(frame)
                out.append(f"conn{index}@{frames[0].get('worker')}:{frame['type']}#{at}")
    return out


def delta_faults(tab: E2EClient) -> tuple[int, int]:
    """(gaps, mismatches): per connection, a reply's seqs that are not 0, 1, 2 …, and deltas
    that do not add up to the done the connection saw."""
    gaps = mismatches = 0
    for frames in tab.connections():
        by_reply: dict[str, list[dict[str, Any]]] = {}
        for frame in frames:
            if frame.get("type") == "delta":
                by_reply.setdefault(str(frame["reply"]), []).append(frame)
        for reply, deltas in by_reply.items():
            seqs = [int(d["seq"]) for d in deltas]
            if seqs != list(range(len(seqs))):
                gaps += 1
            dones = [f for f in frames if f.get("type") == "done" and f.get("reply") == reply]
            if dones and "".join(d["text"] for d in deltas) != dones[0]["text"]:
                mismatches += 1
    return gaps, mismatches


async def test_chaos_loses_nothing(fresh_cluster: ClusterFactory) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**6))
    print(f"CHAOS seed={seed}")
    rng = random.Random(seed)
    cluster = fresh_cluster(redis_persist=True)
    users = [f"c{seed % 1000}u{i}" for i in range(USERS)]
    tabs = {u: [E2EClient(cluster, u, f"{u}/{t}") for t in range(TABS)] for u in users}
    everyone = [tab for group in tabs.values() for tab in group]
    ledger = Ledger()
    try:
        for tab in everyone:
            await tab.connect(timeout=20)
        for i, user in enumerate(users):
            for room in rooms_of(i):
                await tabs[user][0].join(room, timeout=20)
        await wait_until(
            lambda: all(
                all(t.presence(r) is not None for r in rooms_of(i) for t in tabs[u])
                for i, u in enumerate(users)
            ),
            "every tab in its rooms",
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + TRAFFIC
        talkers = [
            asyncio.create_task(
                talk(random.Random(f"{seed}-{u}"), u, tabs[u][0], rooms_of(i), ledger, end)
            )
            for i, u in enumerate(users)
        ]
        await faults(rng, cluster, ledger, end - 8)
        await asyncio.gather(*talkers)
        await asyncio.to_thread(cluster.wait_healthy, 30)

        channels = sorted({c for c, _ in ledger.acked.values()})

        def reader(channel: str) -> E2EClient:
            """A tab of a member of the channel, to read its history."""
            if channel.startswith("dm:"):
                return tabs[channel[3:]][0]
            index = next(i for i in range(USERS) if channel[5:] in rooms_of(i))
            return tabs[users[index]][0]

        histories: dict[str, list[dict[str, Any]]] = {}

        async def replies_ended() -> bool:
            for channel in channels:
                histories[channel] = await history_all(reader(channel), channel)
            return all(
                sum(1 for m in histories[c] if m.get("reply")) >= ledger.asks[c] for c in channels
            )

        for _ in range(80):  # at most about 40 s
            if await replies_ended():
                break
            await asyncio.sleep(0.5)
        await settle(everyone, quiet=1.0, timeout=30)

        first_ids = {
            c: min((parse_id(i) for cc, i in ledger.acked.values() if cc == c)) for c in channels
        }
        counts = Counter[str]()
        details: list[str] = []
        counts["sent"] = len(ledger.acked)
        stored_refs: Counter[str] = Counter()
        for channel in channels:
            traffic = [m for m in histories[channel] if parse_id(m["id"]) >= first_ids[channel]]
            stored_refs.update(str(m["ref"]) for m in traffic if m.get("ref"))
            replies = [m for m in traffic if m.get("reply")]
            counts["replies"] += len(replies)
            counts["taken_over"] += sum(1 for m in replies if m.get("taken_over"))
            counts["interrupted"] += sum(1 for m in replies if m["stop_reason"] == "interrupted")
            counts["unanswered"] += max(0, ledger.asks[channel] - len(replies))
            counts["extra_replies"] += max(0, len(replies) - ledger.asks[channel])
            wanted = [str(m["id"]) for m in traffic]
            members = [
                u for i, u in enumerate(users) if channel == f"dm:{u}" or channel[5:] in rooms_of(i)
            ]
            for user in members:
                for tab in tabs[user]:
                    got = [i for i in stored_ids(tab.raw, channel) if i in set(wanted)]
                    counts["received"] += len(set(got))
                    counts["missing"] += len(set(wanted) - set(got))
                    counts["duplicates"] += len(got) - len(set(got))
                    for twice in sorted({i for i in got if got.count(i) > 1}):
                        details.append(f"{tab.label} got {channel} {twice} {where(tab, twice)}")
                        dump = FAULT_COUNTS.parent / f"chaos-{seed}-{tab.user_id}.json"
                        dump.write_text(json.dumps(tab.raw, indent=0))
                    firsts = list(dict.fromkeys(got))
                    counts["out_of_order"] += sum(
                        1 for a, b in itertools.pairwise(firsts) if parse_id(b) < parse_id(a)
                    )
        counts["stored"] = sum(1 for ref in ledger.acked if stored_refs[ref] >= 1)
        counts["lost"] = sum(1 for ref in ledger.acked if stored_refs[ref] == 0)
        counts["stored_twice"] = sum(1 for ref in ledger.acked if stored_refs[ref] > 1)
        for tab in everyone:
            gaps, mismatches = delta_faults(tab)
            counts["gaps"] += gaps
            counts["deltas_not_adding_up"] += mismatches
        store = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            counts["left_in_flight"] = sum(
                int(store.hlen(key)) for key in store.scan_iter("hub:inflight:*")
            )
        finally:
            store.close()

        order = [
            "sent",
            "stored",
            "lost",
            "stored_twice",
            "received",
            "missing",
            "duplicates",
            "out_of_order",
            "gaps",
            "deltas_not_adding_up",
            "replies",
            "unanswered",
            "extra_replies",
            "taken_over",
            "interrupted",
            "left_in_flight",
        ]
        line = f"CHAOS seed={seed} " + " ".join(f"{k}={counts[k]}" for k in order)
        line += f" faults=[{'; '.join(ledger.faults)}]"
        print(line)
        REPORTED.append(line)
        FAULT_COUNTS.parent.mkdir(parents=True, exist_ok=True)
        with FAULT_COUNTS.open("a") as handle:
            record = {"test": "chaos", "seed": seed, "faults": ledger.faults, **counts}
            handle.write(json.dumps({**record, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        bad = {
            k: counts[k]
            for k in order
            if k
            in (
                "lost",
                "stored_twice",
                "missing",
                "duplicates",
                "out_of_order",
                "gaps",
                "deltas_not_adding_up",
                "unanswered",
                "extra_replies",
                "interrupted",
                "left_in_flight",
            )
            and counts[k]
        }
        assert not bad, f"seed {seed}: {bad}; {details[:10]}"
    finally:
        for tab in everyone:
            with contextlib.suppress(Exception):
                await tab.close()
        await close_all([])
