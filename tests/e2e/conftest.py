"""Fixtures of the end-to-end suite: one shared cluster per module, fresh ones for faults.

Each fault test prints a ``FAULT <name>: sent=… stored=… received per member=[…]
duplicates=…`` line (repeated in the terminal summary) and appends it as JSON to
``test-output/fault-counts.jsonl``. Set ``E2E_KEEP_RUN_DIR=1`` to keep each cluster's run
directory (worker, nginx and Redis logs) for a post-mortem; its path is printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.cluster import Cluster
from tests.deploy.binaries import require_binary
from tests.e2e.support import E2E_ENV, REPORTED

ClusterFactory = Callable[..., Cluster]


def _new_cluster(**options: Any) -> Cluster:
    require_binary("nginx")
    require_binary("redis-server")
    env = {**E2E_ENV, **options.pop("env", {})}
    keep = bool(os.environ.get("E2E_KEEP_RUN_DIR"))  # keep logs for a post-mortem
    cluster = Cluster(3, env=env, start_timeout=30, keep_run_dir=keep, **options)
    if keep:
        print(f"cluster run dir (kept): {cluster.run_dir}")
    return cluster


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[Cluster]:
    """Three workers, Redis and nginx for the tests of a module that break nothing."""
    with _new_cluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster() -> Iterator[ClusterFactory]:
    """Start a cluster of its own for a destructive test (options as for ``Cluster``)."""
    started: list[Cluster] = []

    def start(**options: Any) -> Cluster:
        cluster = _new_cluster(**options)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat the FAULT lines (sent vs. received) at the end of the run."""
    if REPORTED:
        terminalreporter.section("fault counts (also in test-output/fault-counts.jsonl)")
        for line in REPORTED:
            terminalreporter.write_line(line)
