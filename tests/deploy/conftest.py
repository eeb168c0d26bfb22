"""Fixtures of the deployment tests."""

from __future__ import annotations

import pytest

from tests.deploy.binaries import require_binary


@pytest.fixture
def nginx_bin() -> str:
    return require_binary("nginx")


@pytest.fixture
def redis_bin() -> str:
    return require_binary("redis-server")
