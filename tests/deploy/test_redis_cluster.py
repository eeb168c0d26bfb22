"""deploy.redis_cluster against real redis-server nodes: the cluster the cluster tests run on,
and each lever they pull (kill a master, failover, restart, slot migration), seen through
redis-py's cluster client as the hub would see it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from deploy.processes import pid_alive
from tests.support.redis_cluster import (
    RedisClusterNodes,
    key_slot,
    redis_cluster_fixture,
    require_cluster_binaries,
)

pytestmark = pytest.mark.slow

redis_cluster = redis_cluster_fixture("module")


@pytest.fixture
async def client(redis_cluster: RedisClusterNodes) -> AsyncIterator[RedisCluster]:
    nodes = [ClusterNode("127.0.0.1", port) for port in redis_cluster.ports]
    rc = RedisCluster(startup_nodes=nodes, decode_responses=True)
    await rc.initialize()
    yield rc
    await rc.aclose()


async def test_three_masters_each_with_a_replica(
    redis_cluster: RedisClusterNodes, client: RedisCluster
) -> None:
    masters = redis_cluster.masters_ports()
    assert len(masters) == 3
    assert all(len(redis_cluster.replicas_of(port)) == 1 for port in masters)
    for port in redis_cluster.ports:
        assert redis_cluster.info(port, "cluster-info")["cluster_state"] == "ok"
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")

    key = "hub:log:{room:lobby}"
    assert key_slot(key) == redis_cluster.call(masters[0], "CLUSTER", "KEYSLOT", key)
    await client.set(key, "hello")
    owner = redis_cluster.master_of(key_slot(key))
    assert redis_cluster.call(owner, "GET", key) == "hello"
    assert await client.get(key) == "hello"


async def test_failover_restart_and_slot_migration_keep_the_data(
    redis_cluster: RedisClusterNodes, client: RedisCluster
) -> None:
    key = "hub:log:{room:moving}"
    slot = key_slot(key)
    await client.set(key, "kept")
    owner = redis_cluster.master_of(slot)
    assert redis_cluster.call(owner, "WAIT", 1, 5000) == 1  # the replica has it

    assert redis_cluster.kill_node(owner) == -9
    promoted = redis_cluster.wait_failover(slot, owner)
    assert redis_cluster.call(promoted, "GET", key) == "kept"

    redis_cluster.start_node(owner)  # the old master rejoins as the new one's replica
    assert redis_cluster.replicas_of(promoted) == [owner]

    target = next(port for port in redis_cluster.masters_ports() if port != promoted)
    assert redis_cluster.migrate_slot(slot, target) == promoted
    assert redis_cluster.master_of(slot) == target
    assert redis_cluster.call(target, "GET", key) == "kept"
    assert await client.get(key) == "kept"  # the client follows MOVED


def test_stop_leaves_no_process_and_no_directory() -> None:
    require_cluster_binaries()
    nodes = RedisClusterNodes(3, 0)
    with nodes:
        pids = [process.pid for process in nodes.processes.values()]
        assert nodes.is_healthy()
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert not nodes.run_dir.exists()
