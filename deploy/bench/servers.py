"""Start and stop the three setups under test, each on free loopback ports, logs in one folder."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy.bench.load import Target
from deploy.cluster import REPO_ROOT
from deploy.processes import (
    ManagedProcess,
    find_binary,
    free_port,
    http_status,
    redis_ping,
    wait_until,
)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
HUB_ENV = {
    "HUB_LLM": "echo",
    # The flood is one user sending 200 messages at once: lift the per-user send limit.
    "HUB_RATE": "10000",
    "HUB_RATE_BURST": "10000",
    # Thousands of guests from one address, each in rooms of their own, many replies at once.
    "HUB_LOGIN_RATE": "100000",
    "HUB_LOGIN_BURST": "100000",
    "HUB_MAX_CONNECTIONS_PER_IP": "100000",
    "HUB_GUEST_ROOMS": "*",
    "HUB_ROOM_CREATE_BURST": "100",
    "HUB_MAX_REPLIES_PER_WORKER": "1000",
}


def start_redis(log_dir: Path, name: str) -> tuple[ManagedProcess, str]:
    """A private redis-server on a free port, nothing kept on disk; the process and its URL."""
    port = free_port()
    data = log_dir / name
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("redis-server"),
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(data), "--daemonize", "no", "--logfile", "",
    ]  # fmt: skip
    process = ManagedProcess(name, argv, log_dir / f"{name}.log", cwd=REPO_ROOT)
    process.start()
    wait_until(
        lambda: redis_ping("127.0.0.1", port), START_TIMEOUT, f"{name} on port {port}", process
    )
    return process, f"redis://127.0.0.1:{port}/0"


def _python_server(
    log_dir: Path, name: str, args: list[str], env: dict[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = [sys.executable, "-m", *args, "--port", str(port)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = ManagedProcess(name, argv, log_dir / f"{name}.log", env=full_env, cwd=REPO_ROOT)
    process.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_status(url + "/health") == 200, START_TIMEOUT, f"{url}/health", process)
    return process, url


@contextmanager
def running(name: str, log_dir: Path, workers: int = 2) -> Iterator[Target]:
    """One setup: ``hub`` (workers + Redis), ``socketio`` (workers + Redis) or ``bare``."""
    processes: list[ManagedProcess] = []
    try:
        if name == "bare":
            bare, url = _python_server(log_dir, "bare", ["deploy.bench.bare"])
            processes.append(bare)
            yield Target(name, "hub", [url], [_pid(bare)])
            return
        redis, redis_url = start_redis(log_dir, f"{name}-redis")
        processes.append(redis)
        urls, pids = [], []
        secret = secrets.token_urlsafe(32)
        for i in range(workers):
            if name == "hub":
                env = {
                    **HUB_ENV,
                    "HUB_BROKER_URL": redis_url,
                    "HUB_SECRET": secret,
                    "HUB_WORKER_ID": f"hub{i + 1}",
                    "HUB_REDIS_PREFIX": "bench",
                }
                worker, url = _python_server(log_dir, f"hub{i + 1}", ["hub", "serve"], env)
            else:
                worker, url = _python_server(
                    log_dir, f"sio{i + 1}", ["deploy.bench.sio_server", "--redis", redis_url]
                )
            processes.append(worker)
            urls.append(url)
            pids.append(_pid(worker))
        yield Target(name, "hub" if name == "hub" else "socketio", urls, pids, [_pid(redis)])
    finally:
        for process in reversed(processes):
            process.stop(STOP_TIMEOUT)


def _pid(process: ManagedProcess) -> int:
    assert process.pid is not None
    return process.pid
