"""The nginx and redis-server binaries the deployment tests need, or a reason why not.

Where one is missing the test skips, except in CI (``CI=true``), where a missing binary is
a broken runner and fails the test instead.
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
