"""A join storm across three real workers and Redis: 1,500 users send ``join`` to one room at
once. Each is answered ``joined`` (none ``unavailable``, none dropped), every member's count
reaches 1,500 from the snapshot and diffs alone, presence costs each member O(N) bytes in all,
and one message then reaches all 1,500 exactly once. The same code as ``deploy.bench.rooms``,
which measures it at 10,000."""

from __future__ import annotations

import pytest

from deploy.bench.rooms import LIFTED, run
from tests.e2e.conftest import ClusterFactory

pytestmark = pytest.mark.slow

STORM = 1500


async def test_fifteen_hundred_joins_at_once_are_all_answered_and_counted(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster(env=LIFTED)
    figures = await run(cluster, STORM, idle_seconds=1.0)
    assert figures["fanout_delivered"] == STORM
    assert figures["fanout_duplicates"] == 0
    assert figures["joined_max_bytes"] <= 16 * 1024
    assert figures["bytes_per_member_per_join"] <= 200
