"""The Cluster class of deploy/cluster.py against the real thing: redis-server, two hub
workers and nginx. A smoke test of each lever the fault tests will pull (kill, SIGTERM,
restart, Redis down and up); the fault tests themselves check what clients see."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.cluster import REPO_ROOT, Cluster, http_status, pid_alive
from tests.deploy.binaries import require_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_binary("nginx")
    require_binary("redis-server")
    env = {"HUB_LLM": "echo", "HUB_ECHO_DELAY": "0.01", "HUB_DRAIN_TIMEOUT": "3"}
    with Cluster(2, env=env, start_timeout=30) as running:
        yield running


async def login(session: aiohttp.ClientSession, url: str, name: str) -> str:
    async with session.post(url + "/api/login", json={"name": name}) as response:
        assert response.status == 200
        token = (await response.json())["token"]
        assert isinstance(token, str)
        return token


async def welcome(session: aiohttp.ClientSession, ws_url: str, token: str) -> dict[str, Any]:
    async with session.ws_connect(ws_url) as sock:
        await sock.send_json({"type": "hello", "token": token})
        frame = await sock.receive_json(timeout=10)
        assert frame["type"] == "welcome", frame
        return dict(frame)


async def workers_behind_nginx(cluster: Cluster, requests: int) -> list[str]:
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            async with session.get(cluster.url + "/health") as response:
                assert response.status == 200
                seen.append((await response.json())["worker"])
    return seen


def test_addresses_and_state(cluster: Cluster) -> None:
    assert [w.worker_id for w in cluster.workers] == ["hub1", "hub2"]
    assert len(set(cluster.worker_ports) | {cluster.port, cluster.redis_port}) == 4
    state = json.loads((cluster.run_dir / "cluster.json").read_text())
    assert state["ready"] is True
    assert [w["pid"] for w in state["workers"]] == [w.process.pid for w in cluster.workers]
    assert (cluster.run_dir / "secret").read_text().strip() == cluster.secret
    assert os.stat(cluster.run_dir / "secret").st_mode & 0o077 == 0


def test_redis_wants_a_password_that_no_command_line_shows(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.redis_port), timeout=5) as sock:
        sock.sendall(b"GET anything\r\n")
        assert sock.recv(64).startswith(b"-NOAUTH")
    assert f":{cluster.redis_password}@" in cluster.redis_url
    conf = cluster.run_dir / "redis" / "redis.conf"
    assert os.stat(conf).st_mode & 0o077 == 0
    argv = (Path("/proc") / str(cluster.redis.pid) / "cmdline").read_bytes().decode()
    assert cluster.redis_password not in argv
    assert cluster.secret not in argv


async def test_round_robin_over_http_and_websocket(cluster: Cluster) -> None:
    assert set(await workers_behind_nginx(cluster, 4)) == {"hub1", "hub2"}
    async with aiohttp.ClientSession() as session:
        token = await login(session, cluster.url, "Ada")  # minted by one worker ...
        seen = [(await welcome(session, cluster.ws_url, token))["worker"] for _ in range(4)]
    assert set(seen) == {"hub1", "hub2"}  # ... accepted by both: one shared secret


async def test_kill_and_restart_a_worker(cluster: Cluster) -> None:
    assert await asyncio.to_thread(cluster.kill_worker, 0) == -9
    assert cluster.health(0) is None
    assert set(await workers_behind_nginx(cluster, 4)) == {"hub2"}  # nginx skips the dead one
    await asyncio.to_thread(cluster.start_worker, 0)
    assert cluster.health(0) == 200
    # No passive failure marking (max_fails=0): nginx sends to it again at once.
    for _ in range(40):
        if "hub1" in await workers_behind_nginx(cluster, 2):
            break
        await asyncio.sleep(0.25)
    else:
        pytest.fail("nginx never sent to the restarted worker")


async def test_sigterm_drains_with_1012(cluster: Cluster) -> None:
    worker = cluster.worker(1)
    async with aiohttp.ClientSession() as session:
        token = await login(session, worker.url, "Grace")
        async with session.ws_connect(worker.ws_url) as sock:
            await sock.send_json({"type": "hello", "token": token})
            assert (await sock.receive_json(timeout=10))["worker"] == "hub2"
            code = asyncio.create_task(asyncio.to_thread(cluster.terminate_worker, 1))
            while (await sock.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert sock.close_code == 1012
            assert await code == 0
    await asyncio.to_thread(cluster.restart_worker, 1)  # not running: just starts it
    assert cluster.health(1) == 200


async def test_redis_down_and_back_on_the_same_port(cluster: Cluster) -> None:
    port = cluster.redis_port
    await asyncio.to_thread(cluster.stop_redis)
    for _ in range(100):
        if cluster.health(0) == 503 and cluster.health(1) == 503:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"workers still report {cluster.health(0)}, {cluster.health(1)} without Redis")
    await asyncio.to_thread(cluster.start_redis)
    assert cluster.redis_port == port
    await asyncio.to_thread(cluster.wait_healthy, 30)
    assert cluster.health() == 200


def test_command_line_up_status_down(tmp_path: Path) -> None:
    require_binary("nginx")
    require_binary("redis-server")
    script = [sys.executable, str(REPO_ROOT / "deploy" / "cluster.py")]
    run_dir = tmp_path / "run"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*script, *args, "--run-dir", str(run_dir)],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            env={**os.environ, "HUB_LLM": "echo", "HUB_DRAIN_TIMEOUT": "3"},
        )

    up = run("up", "--detach", "--workers", "1", "--port", "0")
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((run_dir / "cluster.json").read_text())
    pids = [state["redis"]["pid"], state["workers"][0]["pid"], state["nginx"]["pid"]]
    try:
        assert http_status(state["url"] + "/health") == 200
        status = run("status")
        assert status.returncode == 0, status.stdout
        assert "hub1" in status.stdout
    finally:
        down = run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "cluster stopped" in down.stdout
    assert not (run_dir / "cluster.json").exists()
    assert not any(pid_alive(pid) for pid in [state["supervisor_pid"], *pids])
