"""A private Redis Cluster for tests: 3 masters and 3 replicas on free loopback ports.

The nodes, their creation and the faults tests inject (kill a master, wait for its replica,
restart a node, move a slot) live in ``deploy.redis_cluster``, shared with
``deploy/cluster.py up --redis-cluster``; this module makes pytest fixtures of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from deploy.redis_cluster import RedisClusterNodes, key_slot
from tests.deploy.binaries import require_binary

__all__ = ["RedisClusterNodes", "key_slot", "redis_cluster_fixture", "require_cluster_binaries"]


def require_cluster_binaries() -> None:
    """Skip without redis-server/redis-cli; in CI (``CI=true``) a missing one fails instead."""
    require_binary("redis-server")
    require_binary("redis-cli")


def _serve(**options: Any) -> Iterator[RedisClusterNodes]:
    require_cluster_binaries()
    with RedisClusterNodes(3, 1, **options) as nodes:
        yield nodes


def redis_cluster_fixture(
    scope: str = "module", name: str = "redis_cluster", **options: Any
) -> Any:
    """Make a pytest fixture yielding a started, healthy ``RedisClusterNodes``.

    ``options`` go to ``RedisClusterNodes`` (e.g. ``appendonly=True``,
    ``node_timeout_ms=1000``). In a conftest or test module:
    ``redis_cluster = redis_cluster_fixture()``.
    """

    def serve() -> Iterator[RedisClusterNodes]:
        yield from _serve(**options)

    return pytest.fixture(scope=scope, name=name)(serve)  # type: ignore[call-overload]
