"""Fixtures of the deployment tests: the nginx and redis-server binaries, or a reason why not.

These tests need real binaries. Where one is missing they skip, except in CI (``CI=true``),
where a missing binary is a broken runner and fails the test instead.
"""

from __future__ import annotations

import os

import pytest

from deploy.cluster import ClusterError, find_binary


def require_binary(name: str) -> str:
    """The path of ``name``; skip the test without it, fail it in CI."""
    try:
        return find_binary(name)
    except ClusterError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"{exc} (CI=true: the runner must install it)")
        pytest.skip(str(exc))


@pytest.fixture
def nginx_bin() -> str:
    return require_binary("nginx")


@pytest.fixture
def redis_bin() -> str:
    return require_binary("redis-server")
