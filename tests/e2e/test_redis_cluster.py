"""Three workers on a real Redis Cluster (3 masters, 3 replicas, started by the tests).

The across-workers tests run again on it (dm and room fan-out, stop from another worker,
history and presence from every worker, resume mid-reply on another worker); then what only a
cluster has: channels spread over several shards with SPUBLISH (never classic PUBLISH), a
master killed mid-conversation (sends refused with ``unavailable`` until a replica takes over,
nothing acknowledged lost when the hub WAITs for a replica, counts printed either way), and a
slot moved and a master restarted under a talking room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from deploy.cluster import Cluster
from deploy.redis_cluster import RedisClusterNodes, key_slot
from tests.e2e.conftest import ClusterFactory, _new_cluster
from tests.e2e.support import (
    WORKERS,
    assert_everyone_got_everything,
    chatter,
    close_all,
    connect_on,
    count_members,
    history_all,
    join_all,
    report,
    settle,
    wait_all_received,
)
from tests.e2e.test_across_workers import (  # noqa: F401 (collected again, on a cluster)
    test_dm_reply_reaches_every_tab_on_every_worker_once,
    test_history_and_presence_read_the_same_from_every_worker,
    test_resume_mid_reply_on_another_worker_has_no_gap_and_no_double,
    test_room_messages_and_replies_reach_every_member_on_every_worker_once,
    test_stop_through_another_worker_stops_the_reply,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[Cluster]:
    """The module's workers, on a Redis Cluster instead of one Redis; its nodes keep an
    append-only file, as a production cluster does (a master restarted without one comes
    back empty and takes its slots' data with it)."""
    with _new_cluster(redis_cluster=True, redis_persist=True) as cluster:
        yield cluster


def nodes_of(cluster: Cluster) -> RedisClusterNodes:
    assert cluster.redis_nodes is not None
    return cluster.redis_nodes


def command_calls(nodes: RedisClusterNodes, port: int, command: str) -> int:
    """How often the node at ``port`` ran ``command`` (from scripts too) since its start."""
    stats = str(nodes.call(port, "INFO", "commandstats"))
    for line in stats.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def test_channels_live_on_several_shards_and_travel_by_spublish(shared_cluster: Cluster) -> None:
    nodes = nodes_of(shared_cluster)
    channels = ["dm:ada", "room:across", "dm:sam", "room:same", "room:resume"]
    owners = {}
    for channel in channels:  # the channels the tests above used
        log = f"{shared_cluster.redis_prefix}:log:{{{channel}}}"
        owner = nodes.master_of(key_slot(log))
        assert nodes.call(owner, "EXISTS", log) == 1, f"{log} is not on its master {owner}"
        owners[channel] = owner
    print(f"channel -> master port: {owners}")
    assert len(set(owners.values())) >= 2
    spublish = {port: command_calls(nodes, port, "spublish") for port in nodes.masters_ports()}
    publish = {port: command_calls(nodes, port, "publish") for port in nodes.ports}
    print(f"SPUBLISH per master: {spublish}; PUBLISH per node: {publish}")
    assert sum(1 for calls in spublish.values() if calls > 0) >= 2
    assert sum(publish.values()) == 0


async def test_room_keeps_talking_while_its_slot_moves_and_its_master_restarts(
    shared_cluster: Cluster,
) -> None:
    nodes = nodes_of(shared_cluster)
    room, channel = "moving", "room:moving"
    slot = key_slot(f"{shared_cluster.redis_prefix}:log:{{{channel}}}")
    members = [await connect_on(shared_cluster, f"mv{i}", w) for i, w in enumerate(WORKERS)]
    try:
        await join_all(members, room)
        talk = [asyncio.create_task(chatter(m, channel, 12, 0.25, m.user_id)) for m in members]
        await asyncio.sleep(1.0)
        owner = nodes.master_of(slot)
        target = next(port for port in nodes.masters_ports() if port != owner)
        await asyncio.to_thread(nodes.migrate_slot, slot, target)
        assert nodes.master_of(slot) == target
        await asyncio.sleep(1.0)
        await asyncio.to_thread(nodes.restart_node, target)  # SIGTERM, start, cluster ok
        said = await asyncio.gather(*talk)
        stored = await history_all(members[0], channel)
        mine = [m for m in stored if m["author"]["id"].startswith("mv")]
        await wait_all_received(members, channel, mine)
        await settle(members)
        counts = count_members("cluster-slot-moved-master-restarted", members, channel, mine, 36)
        report(counts)
        assert sorted(i for ids in said for i in ids) == sorted(m["id"] for m in mine)
        assert_everyone_got_everything(members, channel, mine)
    finally:
        await close_all(members)


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait-1", "no-wait"])
async def test_master_killed_mid_conversation(
    fresh_cluster: ClusterFactory, wait_replicas: int
) -> None:
    cluster = fresh_cluster(redis_cluster=True, env={"HUB_REDIS_WAIT_REPLICAS": str(wait_replicas)})
    nodes = nodes_of(cluster)
    room, channel = "failover", "room:failover"
    slot = key_slot(f"{cluster.redis_prefix}:log:{{{channel}}}")
    members = [await connect_on(cluster, f"fo{i}", w) for i, w in enumerate(WORKERS)]
    try:
        await join_all(members, room)
        talk = [asyncio.create_task(chatter(m, channel, 20, 0.2, m.user_id)) for m in members]
        await asyncio.sleep(1.0)
        killed = await asyncio.to_thread(nodes.kill_master_of, slot)
        promoted = await asyncio.to_thread(nodes.wait_failover, slot, killed)
        # With WAIT the promoted master has no replica to confirm anything until the old
        # one is back (as its replica): sends stay refused until then.
        await asyncio.to_thread(nodes.start_node, killed)
        said = await asyncio.gather(*talk)
        acked = {i for ids in said for i in ids}
        stored = await history_all(members[0], channel)
        mine = [m for m in stored if m["author"]["id"].startswith("fo")]
        lost = acked - {m["id"] for m in mine}
        refused = sum(
            1
            for m in members
            for f in m.raw
            if f.get("type") == "error" and f.get("code") == "unavailable"
        )
        await wait_all_received(members, channel, mine)
        await settle(members)
        not_resumed = sum(
            1 for m in members for w in m.welcomes() if False in (w.get("resumed") or {}).values()
        )
        counts = count_members(
            f"cluster-master-killed-{'wait' if wait_replicas else 'nowait'}",
            members,
            channel,
            mine,
            len(acked),
            acked=len(acked),
            lost=len(lost),
            refused_unavailable=refused,
            resumed_false=not_resumed,
            killed=killed,
            promoted=promoted,
        )
        report(counts)
        print(
            f"acked {len(acked)}, stored {len(mine)}, lost {len(lost)}, refused {refused}, "
            f"resumed false {not_resumed}"
        )
        assert refused > 0, "no send was refused while the master was gone"
        if wait_replicas:
            assert not lost, f"acknowledged but lost with WAIT: {sorted(lost)}"
            assert_everyone_got_everything(members, channel, mine)
        for member in members:  # whatever survived reached everyone, once
            ids = member.ids(channel)
            assert {m["id"] for m in mine} <= set(ids)
            assert len(ids) == len(set(ids)), f"{member.label} got a message twice"
    finally:
        await close_all(members)
