"""A big room across three worker processes on a real Redis: a join storm, paging, a crash.

Clients connect straight to the workers (spread evenly), so each test knows where its users
are; nginx is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from deploy.cluster import Cluster
from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import token
from tests.support.presence_view import online_count, online_view
from tests.support.wsclient import WsClient, connect

pytestmark = pytest.mark.slow

STORM = 1500


async def connect_spread(
    cluster: Cluster, session: aiohttp.ClientSession, prefix: str, count: int, worker: int | None
) -> list[WsClient]:
    """``count`` users, each on worker ``worker`` (or spread round robin), 100 handshakes at a time."""
    gate = asyncio.Semaphore(100)

    async def one(i: int) -> WsClient:
        index = worker if worker is not None else i % len(cluster.workers)
        async with gate:
            return await connect(
                session, cluster.worker(index).ws_url, token(cluster, f"{prefix}{i:05d}")
            )

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def pump(clients: list[WsClient], seconds: float) -> None:
    """Read whatever every client has been sent for a while (frames land in ``received``)."""
    await asyncio.gather(*(c.drain(seconds) for c in clients))


async def test_a_join_storm_across_three_workers_is_answered_and_counted(
    shared_cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as session:
        clients = await connect_spread(shared_cluster, session, "s", STORM, None)
        started = time.monotonic()
        await asyncio.gather(*(c.send(type="join", room="arena") for c in clients))
        joined = await asyncio.gather(
            *(c.expect("joined", room="arena", timeout=120) for c in clients)
        )
        filled = time.monotonic() - started
        refused = [f for c in clients for f in c.received if f["type"] == "error"]
        assert refused == [], refused[:3]
        assert max(len(j["members"]) for j in joined) == 100
        # Every member's count converges to the whole room, from diffs alone.
        for _ in range(30):
            await pump(clients, 0.3)
            if all(online_count(c.received, "arena") == STORM for c in clients):
                break
        counts = {online_count(c.received, "arena") for c in clients}
        assert counts == {STORM}, counts
        # Paging from a member on any worker returns everyone exactly once.
        ids: list[str] = []
        after = None
        for n in range(100):
            frame = {"type": "members", "room": "arena", "limit": 200, "ref": f"p{n}"}
            if after:
                frame["after"] = after
            await clients[n % 3].send(**frame)
            page = await clients[n % 3].expect("members", ref=f"p{n}", timeout=30)
            ids += [m["id"] for m in page["members"]]
            if not page["more"]:
                break
            after = ids[-1]
        assert len(ids) == len(set(ids)) == STORM
        presence_bytes = sum(
            len(str(f)) for c in clients for f in c.received if f["type"] == "presence"
        )
        print(
            f"\nSTORM {STORM} joins over 3 workers: all joined in {filled:.1f} s; "
            f"presence {presence_bytes / STORM / STORM:.1f} B per member per join; "
            f"largest joined {max(len(str(j)) for j in joined)} B"
        )
        for client in clients:
            await client.close()


async def test_a_crashed_workers_members_leave_by_diff_on_the_others(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster()
    async with aiohttp.ClientSession() as session:
        doomed = await connect_spread(cluster, session, "d", 5, 0)
        watchers = [
            await connect(session, cluster.worker(i).ws_url, token(cluster, f"w{i}"))
            for i in (1, 2)
        ]
        for client in doomed + watchers:
            await client.send(type="join", room="porch")
            await client.expect("joined", room="porch", timeout=30)
        survivors = {"w1", "w2"}
        everyone = {f"d{i:05d}" for i in range(5)} | survivors
        for watcher in watchers:
            await watcher.expect_online("porch", everyone, timeout=30)
        cluster.kill_worker(0)
        killed = time.monotonic()
        for watcher in watchers:
            await watcher.expect_online("porch", survivors, timeout=30)
        faded = time.monotonic() - killed
        leaves = [
            uid
            for w in watchers
            for f in w.received
            if f["type"] == "presence"
            for uid in f.get("leaves", [])
        ]
        assert sorted(set(leaves)) == sorted(c.welcome["user"]["id"] for c in doomed)
        assert online_view(watchers[0].received, "porch") is not None
        print(f"\nCRASH: 5 members of a killed worker left by diff after {faded:.1f} s")
        for watcher in watchers:
            await watcher.close()
