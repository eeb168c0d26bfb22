#!/usr/bin/env python3
"""A local chat hub cluster without Docker: one redis-server (or a Redis Cluster), N hub
workers, one nginx.

Command line (from the repository root, with the project's virtualenv's Python)::

    python deploy/cluster.py up [--workers 3] [--port 8000] [--redis-cluster] [--detach]
    python deploy/cluster.py status [--port 8000]
    python deploy/cluster.py down [--port 8000]

``up`` runs in the foreground and stops everything on Ctrl-C (or SIGTERM, or ``down`` from
another terminal); ``--detach`` starts it in the background and returns once it is healthy.

The same machinery is a library for tests: :class:`Cluster` starts redis, the workers and
nginx on free ports, and can kill, stop and restart each of them. Its methods block (each
wait is bounded); from async code call them through ``asyncio.to_thread``.

Every process runs in its own session (so a Ctrl-C in the terminal reaches only this
supervisor, which stops the children in order: workers drain first, then nginx, then
redis) and, on Linux, gets SIGTERM if the supervisor dies without cleaning up.

Only the standard library is used, so this module imports without the hub's dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

if not __package__:  # run as a script: make the `deploy` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.processes import (
    KILL_WAIT,
    ClusterError,
    ManagedProcess,
    check_port_free,
    cmdline,
    find_binary,
    free_port,
    http_status,
    pid_alive,
    port_bindable,
    redis_ping,
    wait_until,
)
from deploy.redis_cluster import RedisClusterNodes

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The docker-compose / production nginx config; the local config copies its upstream parameters.
NGINX_CONF = REPO_ROOT / "nginx.conf"
#: The shared proxy rules, included by both configs.
NGINX_HTTP_RULES = REPO_ROOT / "deploy" / "nginx" / "hub-http.conf"
NGINX_SERVER_RULES = REPO_ROOT / "deploy" / "nginx" / "hub-server.conf"
#: The upstream block name the shared rules proxy to.
UPSTREAM_NAME = "hub_workers"

#: The hub's default HUB_DRAIN_TIMEOUT; a worker gets this plus WORKER_GRACE to exit on SIGTERM
#: (``hub serve`` allows its cleanup HUB_DRAIN_TIMEOUT + 5 s).
DEFAULT_DRAIN_TIMEOUT = 10.0
WORKER_GRACE = 10.0
#: How long redis-server and nginx get to exit on SIGTERM.
STOP_GRACE = 5.0

WaitFor = Literal["healthy", "listening", "no"]


# --------------------------------------------------------------------------- nginx config


@dataclass(frozen=True)
class UpstreamTemplate:
    """What the local config takes from nginx.conf's upstream block."""

    server_params: str  # e.g. "max_fails=0"
    other_directives: tuple[str, ...]  # e.g. ("keepalive 16",)


def read_upstream_template(conf_text: str) -> UpstreamTemplate:
    """Parse ``upstream hub_workers { ... }`` of nginx.conf: server parameters and other lines.

    Every ``server`` line must carry the same parameters, so there is one set to copy.
    """
    match = re.search(r"\bupstream\s+" + UPSTREAM_NAME + r"\s*\{(.*?)\}", conf_text, re.S)
    if match is None:
        raise ClusterError(f"{NGINX_CONF} has no `upstream {UPSTREAM_NAME}` block")
    body = "\n".join(line.split("#", 1)[0] for line in match.group(1).splitlines())
    params: set[str] = set()
    others: list[str] = []
    for statement in (part.strip() for part in body.split(";")):
        if not statement:
            continue
        words = statement.split()
        if words[0] == "server":
            params.add(" ".join(words[2:]))
        else:
            others.append(" ".join(words))
    if len(params) != 1:
        raise ClusterError(
            f"{NGINX_CONF}: every server of `upstream {UPSTREAM_NAME}` must have the same "
            f"parameters, found {sorted(params)}"
        )
    return UpstreamTemplate(server_params=params.pop(), other_directives=tuple(others))


def render_local_nginx_conf(
    *,
    listen_host: str,
    listen_port: int,
    workers: Sequence[tuple[str, int]],
    pid_path: Path,
    access_log: Path,
    source: Path = NGINX_CONF,
    http_rules: Path = NGINX_HTTP_RULES,
    server_rules: Path = NGINX_SERVER_RULES,
) -> str:
    """The nginx config of a local cluster: the shared rules, local ports and paths.

    Run it with ``nginx -p <dir>/ -c <file>``: temporary files go to the prefix directory.
    Logs: errors to stderr (the supervisor's log file), accesses to ``access_log``.
    """
    template = read_upstream_template(source.read_text())
    params = f" {template.server_params}" if template.server_params else ""
    servers = "".join(f"        server {host}:{port}{params};\n" for host, port in workers)
    others = "".join(f"        {directive};\n" for directive in template.other_directives)
    return (
        f"# Rendered by deploy/cluster.py for a local cluster; edit {source.name} or\n"
        f"# {http_rules.parent.relative_to(REPO_ROOT)}/ instead.\n"
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"pid {pid_path};\n"
        "error_log stderr notice;\n"
        "\n"
        "events {\n"
        "    worker_connections 4096;\n"
        "}\n"
        "\n"
        "http {\n"
        f"    include {http_rules};\n"
        f"    access_log {access_log} hub_proxy;\n"
        "\n"
        f"    upstream {UPSTREAM_NAME} {{\n"
        f"{servers}{others}"
        "    }\n"
        "\n"
        "    server {\n"
        f"        listen {listen_host}:{listen_port};\n"
        "        server_name _;\n"
        f"        include {server_rules};\n"
        "    }\n"
        "}\n"
    )


# --------------------------------------------------------------------------- the cluster


@dataclass
class Worker:
    """One hub worker of a :class:`Cluster`."""

    index: int  # 0-based position in Cluster.workers
    worker_id: str  # HUB_WORKER_ID: "hub1", "hub2", ... as in docker-compose.yml
    host: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"


class Cluster:
    """redis-server + N hub workers + nginx on this machine, for a developer or a test.

    Ports given as 0 are picked free at construction, so every address is known before
    ``start``. Worker ``i`` (0-based) has HUB_WORKER_ID ``hub{i+1}``. All workers share
    HUB_SECRET (``secret``, else the environment's HUB_SECRET, else a random one), the Redis
    URL and HUB_REDIS_PREFIX. ``env`` adds or overrides variables of every worker (e.g.
    ``{"HUB_LLM": "echo"}``); the rest is inherited from this process.

    Logs go to ``run_dir/logs/`` (redis.log, hub1.log, ..., nginx.log, nginx-access.log).
    A run_dir this class created itself is deleted by ``stop`` unless ``keep_run_dir``.

    Redis keeps no data on disk unless ``redis_persist``: then it writes an append-only
    file (fsync on every write) to ``run_dir/redis/``, so a stopped or killed Redis comes
    back with its data on the same port.

    With ``redis_cluster`` the workers share a Redis Cluster instead (3 masters, 3 replicas,
    :class:`deploy.redis_cluster.RedisClusterNodes` in ``redis_nodes``, data and logs under
    ``run_dir``; ``redis_port``, if given, is the first of six consecutive node ports), and get
    ``HUB_BROKER_URL=redis+cluster://...`` naming every node.
    """

    def __init__(
        self,
        workers: int = 3,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        redis_port: int = 0,
        worker_ports: Sequence[int] | None = None,
        secret: str | None = None,
        redis_prefix: str = "hub",
        redis_persist: bool = False,
        env: Mapping[str, str] | None = None,
        run_dir: Path | str | None = None,
        keep_run_dir: bool = False,
        hub_command: Sequence[str] | None = None,
        nginx_bin: str | None = None,
        redis_bin: str | None = None,
        start_timeout: float = 30.0,
        redis_cluster: bool = False,
        redis_node_timeout_ms: int = 1000,
    ) -> None:
        if workers < 1:
            raise ValueError("a cluster needs at least one worker")
        if worker_ports is not None and len(worker_ports) != workers:
            raise ValueError(f"worker_ports has {len(worker_ports)} ports for {workers} workers")
        self.host = host
        self.start_timeout = start_timeout
        self.redis_persist = redis_persist
        self.redis_prefix = redis_prefix
        self._nginx_bin = find_binary("nginx", nginx_bin)
        self._redis_bin = find_binary("redis-server", redis_bin)
        self._hub_command = list(hub_command or [sys.executable, "-m", "hub", "serve"])

        self.port = port or free_port(host)
        self.redis_port = redis_port or free_port("127.0.0.1")
        ports = (
            list(worker_ports) if worker_ports else [free_port("127.0.0.1") for _ in range(workers)]
        )

        self._own_run_dir = run_dir is None
        self._keep_run_dir = keep_run_dir
        self.run_dir = (
            Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="hub-cluster-"))
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.run_dir / "logs"
        self.nginx_prefix = self.run_dir / "nginx"

        self.secret = secret or os.environ.get("HUB_SECRET") or secrets.token_urlsafe(32)
        # Any local user could reach a loopback Redis: it gets a password of its own, given in
        # a config file (mode 600), never on a command line.
        self.redis_password = secrets.token_urlsafe(18)
        self._extra_env = dict(env or {})
        merged = {**os.environ, **self._extra_env}
        self.drain_timeout = float(merged.get("HUB_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT))

        self._lock = threading.RLock()
        self._started = False
        self.redis = ManagedProcess("redis-server", self._redis_argv(), self.log_dir / "redis.log")
        self.redis_nodes: RedisClusterNodes | None = None
        if redis_cluster:
            self.redis_nodes = RedisClusterNodes(
                3,
                1,
                ports=[redis_port + i for i in range(6)] if redis_port else None,
                node_timeout_ms=redis_node_timeout_ms,
                appendonly=redis_persist,
                run_dir=self.run_dir / "redis-cluster",
                log_dir=self.log_dir,
                redis_bin=self._redis_bin,
                start_timeout=start_timeout,
                password=self.redis_password,
            )
        self.workers: tuple[Worker, ...] = tuple(
            self._make_worker(i, worker_port) for i, worker_port in enumerate(ports)
        )
        self.nginx_conf_path = self.nginx_prefix / "nginx.conf"
        self.nginx = ManagedProcess(
            "nginx",
            [
                self._nginx_bin,
                "-p",
                f"{self.nginx_prefix}/",
                "-c",
                str(self.nginx_conf_path),
                "-e",
                "stderr",
            ],
            self.log_dir / "nginx.log",
        )

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """The cluster's address: nginx, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self._client_host()}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._client_host()}:{self.port}/ws"

    @property
    def redis_url(self) -> str:
        """The workers' HUB_BROKER_URL: ``redis://`` or, with a Redis Cluster, ``redis+cluster://``."""
        if self.redis_nodes is not None:
            return self.redis_nodes.url
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"

    @property
    def worker_ports(self) -> list[int]:
        return [worker.port for worker in self.workers]

    def worker(self, index: int) -> Worker:
        return self.workers[index]

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    # ---------------------------------------------------------------- whole cluster

    def start(self) -> None:
        """Start redis, the workers (waiting until each is healthy), then nginx.

        On any failure everything already started is stopped again and ClusterError says
        what failed, with the end of its log.
        """
        with self._lock:
            if self._started:
                raise ClusterError("this cluster is already started")
            self._started = True
            try:
                check_port_free(self.host, self.port)
                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._write_secret()
                self.start_redis()
                for worker in self.workers:
                    self._check_worker_port(worker)
                    worker.process.start()
                for worker in self.workers:
                    self._wait_worker(worker, "healthy", self.start_timeout)
                self.start_nginx()
            except BaseException:
                with contextlib.suppress(ClusterError):  # keep the reason it failed
                    self.stop()
                raise
            self.write_state(ready=True)

    def stop(self) -> None:
        """Stop everything, bounded: workers drain (SIGTERM, all at once) and are SIGKILLed
        after HUB_DRAIN_TIMEOUT + 10 s, then nginx, then redis. Safe to call twice."""
        with self._lock:
            errors: list[str] = []
            for worker in self.workers:
                worker.process.send(signal.SIGTERM)
            deadline = time.monotonic() + self.drain_timeout + WORKER_GRACE
            for worker in self.workers:
                try:
                    worker.process.stop(max(0.1, deadline - time.monotonic()))
                except ClusterError as exc:
                    errors.append(str(exc))
            for process in (self.nginx, self.redis):
                try:
                    process.stop(STOP_GRACE)
                except ClusterError as exc:
                    errors.append(str(exc))
            if self.redis_nodes is not None:
                try:
                    self.redis_nodes.stop()
                except ClusterError as exc:
                    errors.append(str(exc))
            with contextlib.suppress(OSError):
                (self.run_dir / "cluster.json").unlink()
            self._started = False
            if self._own_run_dir and not self._keep_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if errors:
                raise ClusterError("; ".join(errors))

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every running worker and nginx answer /health with 200."""
        limit = self.start_timeout if timeout is None else timeout
        for worker in self.workers:
            if worker.process.alive():
                self._wait_worker(worker, "healthy", limit)
        if self.nginx.alive():
            wait_until(
                lambda: http_status(self.url + "/health") == 200,
                limit,
                "nginx /health 200",
                self.nginx,
            )

    def health(self, index: int | None = None) -> int | None:
        """HTTP status of /health of worker ``index``, or through nginx when None; None if no answer."""
        base = self.url if index is None else self.workers[index].url
        return http_status(base + "/health")

    def dead_processes(self) -> list[ManagedProcess]:
        """The processes that were started but have exited (for a supervisor loop)."""
        processes = [self.redis, *(worker.process for worker in self.workers), self.nginx]
        if self.redis_nodes is not None:
            processes += self.redis_nodes.processes.values()
        return [p for p in processes if p.pid is not None and not p.alive()]

    # ---------------------------------------------------------------- workers

    def kill_worker(self, index: int) -> int | None:
        """SIGKILL worker ``index`` (a crash: no drain); returns its exit status (-9)."""
        with self._lock:
            code = self.workers[index].process.kill()
            self.write_state()
            return code

    def terminate_worker(self, index: int, timeout: float | None = None) -> int | None:
        """SIGTERM worker ``index`` (it drains) and wait for it to exit; its exit status.

        Waits at most ``timeout`` (default HUB_DRAIN_TIMEOUT + 10 s), then SIGKILLs it.
        """
        with self._lock:
            limit = self.drain_timeout + WORKER_GRACE if timeout is None else timeout
            code = self.workers[index].process.stop(limit)
            self.write_state()
            return code

    def signal_worker(self, index: int, sig: signal.Signals) -> None:
        """Send ``sig`` to worker ``index``: e.g. SIGSTOP to hang it, SIGCONT to resume it."""
        self.workers[index].process.send(sig)

    def start_worker(
        self, index: int, wait: WaitFor = "healthy", timeout: float | None = None
    ) -> None:
        """Start worker ``index`` again on its own port.

        ``wait``: "healthy" (its /health says 200), "listening" (it answers HTTP at all,
        e.g. while Redis is down) or "no".
        """
        with self._lock:
            worker = self.workers[index]
            self._check_worker_port(worker)
            worker.process.start()
            self.write_state()
            self._wait_worker(worker, wait, self.start_timeout if timeout is None else timeout)

    def restart_worker(
        self, index: int, graceful: bool = True, wait: WaitFor = "healthy"
    ) -> int | None:
        """Stop worker ``index`` (SIGTERM and drain, or SIGKILL) and start it again on its port.

        Returns the old process's exit status.
        """
        with self._lock:
            code = self.terminate_worker(index) if graceful else self.kill_worker(index)
            self.start_worker(index, wait=wait)
            return code

    # ---------------------------------------------------------------- redis

    def start_redis(self, timeout: float | None = None) -> None:
        """Start redis-server on the cluster's Redis port and wait until it answers PING
        (with a Redis Cluster: start its stopped nodes and wait until it says ok)."""
        with self._lock:
            if self.redis_nodes is not None:
                self.redis_nodes.start()
                self.write_state()
                return
            self._check_port(self.redis_port, "redis-server")
            (self.run_dir / "redis").mkdir(parents=True, exist_ok=True)
            self._write_private(
                self.run_dir / "redis" / "redis.conf", "requirepass " + self.redis_password
            )
            self.redis.start()
            wait_until(
                lambda: redis_ping("127.0.0.1", self.redis_port),
                self.start_timeout if timeout is None else timeout,
                f"redis-server on port {self.redis_port}",
                self.redis,
            )
            self.write_state()

    def stop_redis(self, timeout: float = STOP_GRACE) -> int | None:
        """SIGTERM redis-server (a clean shutdown) and wait; its exit status."""
        with self._lock:
            if self.redis_nodes is not None:
                self.redis_nodes.stop()
                self.write_state()
                return 0
            code = self.redis.stop(timeout)
            self.write_state()
            return code

    def kill_redis(self) -> int | None:
        """SIGKILL redis-server (a crash); its exit status (-9)."""
        with self._lock:
            if self.redis_nodes is not None:
                self.redis_nodes.kill()
                self.write_state()
                return -9
            code = self.redis.kill()
            self.write_state()
            return code

    def restart_redis(self, graceful: bool = True) -> None:
        """Stop (or kill) redis-server and start it again on the same port."""
        with self._lock:
            if graceful:
                self.stop_redis()
            else:
                self.kill_redis()
            self.start_redis()

    # ---------------------------------------------------------------- nginx

    def start_nginx(self) -> None:
        """Render the local nginx config, check it with ``nginx -t``, start nginx, wait for it."""
        with self._lock:
            self.nginx_prefix.mkdir(parents=True, exist_ok=True)
            # nginx workers run as an unprivileged user when the master is root: let them
            # reach the temp directories under the prefix.
            for directory in (self.run_dir, self.nginx_prefix):
                directory.chmod(0o755)
            self.nginx_conf_path.write_text(
                render_local_nginx_conf(
                    listen_host=self.host,
                    listen_port=self.port,
                    workers=[("127.0.0.1", worker.port) for worker in self.workers],
                    pid_path=self.nginx_prefix / "nginx.pid",
                    access_log=self.log_dir / "nginx-access.log",
                )
            )
            test = subprocess.run(
                [*self.nginx.argv, "-t", "-q"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if test.returncode != 0:
                raise ClusterError(f"nginx -t rejected {self.nginx_conf_path}:\n{test.stderr}")
            self.nginx.start()
            wait_until(
                lambda: http_status(self.url + "/health") is not None,
                self.start_timeout,
                f"nginx on {self.url}",
                self.nginx,
            )
            self.write_state()

    def stop_nginx(self, timeout: float = STOP_GRACE) -> int | None:
        """Fast shutdown of nginx (SIGTERM: open WebSockets are cut); its exit status."""
        with self._lock:
            code = self.nginx.stop(timeout)
            self.write_state()
            return code

    # ---------------------------------------------------------------- state & internals

    def state(self, ready: bool = False) -> dict[str, Any]:
        """What ``cluster.py down/status`` need: pids, ports, the URL."""

        def entry(process: ManagedProcess, port: int) -> dict[str, Any]:
            return {
                "name": process.name,
                "pid": process.pid if process.alive() else None,
                "port": port,
            }

        return {
            "supervisor_pid": os.getpid(),
            "ready": ready,
            "url": self.url,
            "run_dir": str(self.run_dir),
            "drain_timeout": self.drain_timeout,
            "redis": entry(self.redis, self.redis_port),
            "redis_nodes": [
                entry(process, port) for port, process in self.redis_nodes.processes.items()
            ]
            if self.redis_nodes is not None
            else [],
            "workers": [entry(w.process, w.port) for w in self.workers],
            "nginx": entry(self.nginx, self.port),
        }

    def write_state(self, ready: bool | None = None) -> None:
        path = self.run_dir / "cluster.json"
        if ready is None:
            try:
                ready = bool(json.loads(path.read_text()).get("ready"))
            except (OSError, ValueError):
                ready = False
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.state(ready), indent=2))
            tmp.replace(path)

    def log(self, name: str) -> str:
        """The whole log of ``name``: "redis", "nginx", "nginx-access" or a worker id ("hub1")."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _make_worker(self, index: int, port: int) -> Worker:
        worker_id = f"hub{index + 1}"
        env = {
            **os.environ,
            **self._extra_env,
            "HUB_HOST": "127.0.0.1",
            "HUB_PORT": str(port),
            "HUB_WORKER_ID": worker_id,
            "HUB_BROKER_URL": self.redis_url,
            "HUB_SECRET": self.secret,
            "HUB_REDIS_PREFIX": self.redis_prefix,
            "PYTHONUNBUFFERED": "1",
        }
        argv = [*self._hub_command, "--host", "127.0.0.1", "--port", str(port)]
        process = ManagedProcess(
            worker_id, argv, self.log_dir / f"{worker_id}.log", env=env, cwd=REPO_ROOT
        )
        return Worker(
            index=index, worker_id=worker_id, host="127.0.0.1", port=port, process=process
        )

    def _redis_argv(self) -> list[str]:
        data_dir = self.run_dir / "redis"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.redis_persist
            else ["--appendonly", "no"]
        )
        return [
            self._redis_bin,
            str(data_dir / "redis.conf"),
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--save", "",
            *persistence,
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def _wait_worker(self, worker: Worker, wait: WaitFor, timeout: float) -> None:
        if wait == "no":
            return
        url = worker.url + "/health"
        if wait == "healthy":
            wait_until(
                lambda: http_status(url) == 200, timeout, f"{url} to answer 200", worker.process
            )
        else:
            wait_until(
                lambda: http_status(url) is not None, timeout, f"{url} to answer", worker.process
            )

    def _check_worker_port(self, worker: Worker) -> None:
        self._check_port(worker.port, worker.worker_id)

    def _check_port(self, port: int, who: str) -> None:
        """Wait briefly for ``port`` to be free (a just-killed process may still hold it)."""
        try:
            wait_until(lambda: port_bindable(port), 5.0, f"port {port} for {who} to be free")
        except ClusterError:
            raise ClusterError(f"port {port} for {who} is in use by another process") from None

    def _write_secret(self) -> None:
        self._write_private(self.run_dir / "secret", self.secret)

    @staticmethod
    def _write_private(path: Path, line: str) -> None:
        """Write one line to a file only its owner can read."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(line + "\n")


# --------------------------------------------------------------------------- command line


def default_run_dir(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"hub-cluster-{port}"


def _read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_ours(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and (where /proc tells) its command line contains ``marker``.

    Guards ``down`` against a stale state file whose pids now belong to something else.
    """
    if not pid_alive(pid):
        return False
    command = cmdline(pid)
    return command is None or marker in command


def _signal_and_wait(pid: int, sig: signal.Signals, timeout: float) -> bool:
    """Signal ``pid`` and wait up to ``timeout`` s for it to go; True if it went."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def cmd_up(args: argparse.Namespace) -> int:
    port = args.port or free_port(args.host)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(port)
    previous = _read_state(run_dir)
    if previous and _is_ours(int(previous.get("supervisor_pid", 0)), "cluster"):
        print(f"a cluster already runs from {run_dir} at {previous.get('url')}; run `down` first")
        return 1
    if args.detach:
        return _up_detached(args, port, run_dir)

    env: dict[str, str] = {}
    if args.llm:
        env["HUB_LLM"] = args.llm
    cluster = Cluster(
        args.workers,
        port=port,
        host=args.host,
        redis_port=args.redis_port,
        secret=_read_secret_file(args.secret_file),
        redis_prefix=args.redis_prefix,
        redis_persist=args.redis_persist,
        env=env,
        run_dir=run_dir,
        nginx_bin=args.nginx,
        redis_bin=args.redis_server,
        start_timeout=args.timeout,
        redis_cluster=args.redis_cluster,
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    exit_code = 0
    try:
        cluster.start()
        _print_summary(cluster)
        reported: set[str] = set()
        while True:  # until Ctrl-C / SIGTERM / `down`
            time.sleep(1.0)
            for process in cluster.dead_processes():
                if process.name not in reported:
                    reported.add(process.name)
                    print(
                        f"warning: {process.name} exited ({process.returncode}); "
                        f"see {process.log_path}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("\nstopping the cluster ...", flush=True)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        try:
            cluster.stop()
        except ClusterError as exc:
            print(f"error while stopping: {exc}", file=sys.stderr)
            exit_code = 1
    print("cluster stopped", flush=True)
    return exit_code


def _print_summary(cluster: Cluster) -> None:
    print(f"hub cluster up: {cluster.url}  (WebSocket {cluster.ws_url})")
    print(f"  redis   {cluster.redis_url}  persist={'yes' if cluster.redis_persist else 'no'}")
    if cluster.redis_nodes is not None:
        nodes = cluster.redis_nodes
        masters = nodes.masters_ports()
        for port in nodes.ports:
            role = "master" if port in masters else "replica"
            print(f"    node {port}  {role:<8} pid {nodes.processes[port].pid}")
    for worker in cluster.workers:
        print(f"  {worker.worker_id:<7} {worker.url}  pid {worker.process.pid}")
    print(f"  nginx   {cluster.url}  pid {cluster.nginx.pid}  config {cluster.nginx_conf_path}")
    print(f"  logs    {cluster.log_dir}/   HUB_SECRET in {cluster.run_dir / 'secret'}")
    print(
        f"stop with Ctrl-C or: python deploy/cluster.py down --run-dir {cluster.run_dir}",
        flush=True,
    )


def _up_detached(args: argparse.Namespace, port: int, run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        (run_dir / "cluster.json").unlink()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "up",
        "--port",
        str(port),
        "--run-dir",
        str(run_dir),
    ]
    argv += _forwarded_options(args)
    log_path = run_dir / "cluster.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout * 2 + 10
    while time.monotonic() < deadline:
        state = _read_state(run_dir)
        if state and state.get("ready") and state.get("supervisor_pid") == child.pid:
            print(f"hub cluster up: {state['url']}  (supervisor pid {child.pid}, log {log_path})")
            print(f"stop with: python deploy/cluster.py down --run-dir {run_dir}")
            return 0
        if child.poll() is not None:
            print(f"the cluster did not start; its log {log_path}:", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(
        f"the cluster did not become ready in time; stopping it (log {log_path})", file=sys.stderr
    )
    _signal_and_wait(
        child.pid, signal.SIGTERM, DEFAULT_DRAIN_TIMEOUT + WORKER_GRACE + 2 * STOP_GRACE
    )
    return 1


def _read_secret_file(path: str | None) -> str | None:
    """The secret in ``path`` (first line), or None without a path."""
    if path is None:
        return None
    secret = Path(path).read_text().strip()
    if len(secret.encode()) < 32:
        raise SystemExit(f"{path}: HUB_SECRET must be at least 32 bytes")
    return secret


def _forwarded_options(args: argparse.Namespace) -> list[str]:
    out = ["--workers", str(args.workers), "--host", args.host, "--timeout", str(args.timeout)]
    out += ["--redis-port", str(args.redis_port), "--redis-prefix", args.redis_prefix]
    # The secret travels as a file name, never as a value: argv is visible to every local user.
    for flag, value in (
        ("--secret-file", args.secret_file),
        ("--llm", args.llm),
        ("--nginx", args.nginx),
    ):
        if value:
            out += [flag, value]
    if args.redis_server:
        out += ["--redis-server", args.redis_server]
    if args.redis_persist:
        out.append("--redis-persist")
    if args.redis_cluster:
        out.append("--redis-cluster")
    return out


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.port)
    state = _read_state(run_dir)
    if state is None:
        print(f"no cluster state in {run_dir}: nothing to stop")
        return 0
    drain = float(state.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT))
    supervisor = int(state.get("supervisor_pid", 0))
    if supervisor and _is_ours(supervisor, "cluster"):
        print(f"stopping the cluster supervised by pid {supervisor} ...", flush=True)
        if _signal_and_wait(supervisor, signal.SIGTERM, drain + WORKER_GRACE + 3 * STOP_GRACE):
            print("cluster stopped")
            return 0
        print("the supervisor did not finish in time; stopping its processes directly")
    # The supervisor is gone (killed?): stop what it left, workers first.
    leftovers: list[tuple[dict[str, Any], str, float]] = [
        *((w, "hub", drain + WORKER_GRACE) for w in state.get("workers", [])),
        (state.get("nginx", {}), "nginx", STOP_GRACE),
        (state.get("redis", {}), "redis-server", STOP_GRACE),
        *((node, "redis-server", STOP_GRACE) for node in state.get("redis_nodes", [])),
    ]
    stopped = 0
    for entry, marker, timeout in leftovers:
        pid = entry.get("pid")
        if isinstance(pid, int) and _is_ours(pid, marker):
            if not _signal_and_wait(pid, signal.SIGTERM, timeout):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                _signal_and_wait(pid, signal.SIGKILL, KILL_WAIT)
            print(f"stopped {entry.get('name')} (pid {pid})")
            stopped += 1
    if not stopped:
        print("its processes had already exited")
    with contextlib.suppress(OSError):
        (run_dir / "cluster.json").unlink()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.port)
    state = _read_state(run_dir)
    if state is None:
        print(f"no cluster state in {run_dir}")
        return 1
    print(
        f"cluster {state.get('url')}  supervisor pid {state.get('supervisor_pid')}  run dir {run_dir}"
    )
    all_ok = True
    redis_entries = state.get("redis_nodes") or [state.get("redis", {})]
    for entry in [*redis_entries, *state.get("workers", []), state.get("nginx", {})]:
        pid, port, name = entry.get("pid"), entry.get("port"), entry.get("name")
        running = isinstance(pid, int) and pid_alive(pid)
        health = ""
        if name == "redis-server" or str(name).startswith("redis-"):
            health = "PONG" if redis_ping("127.0.0.1", int(port)) else "no answer"
        elif name == "nginx":
            health = f"/health {http_status(str(state.get('url')) + '/health')}"
        else:
            health = f"/health {http_status(f'http://127.0.0.1:{port}/health')}"
        all_ok = all_ok and running and health in ("PONG", "/health 200")
        print(f"  {name:<13} port {port:<6} pid {pid if running else '-':<8} {health}")
    return 0 if all_ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster.py",
        description="A local chat hub cluster: redis-server, N hub workers, nginx.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the cluster; Ctrl-C stops it")
    up.add_argument("--workers", type=int, default=3, help="number of hub workers (default 3)")
    up.add_argument("--port", type=int, default=8000, help="nginx port (default 8000; 0: any free)")
    up.add_argument("--host", default="127.0.0.1", help="nginx listen address (default 127.0.0.1)")
    up.add_argument(
        "--redis-port",
        type=int,
        default=0,
        help="redis port (default: a free one; with --redis-cluster the first of six)",
    )
    up.add_argument("--redis-prefix", default="hub", help="HUB_REDIS_PREFIX (default hub)")
    up.add_argument(
        "--redis-persist", action="store_true", help="keep Redis data in an append-only file"
    )
    up.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a Redis Cluster (3 masters, 3 replicas) instead of one redis-server",
    )
    up.add_argument(
        "--secret-file",
        default=None,
        help="file holding HUB_SECRET (default: $HUB_SECRET, else random); "
        "a file, not a value, so the secret never shows in `ps`",
    )
    up.add_argument(
        "--llm", default=None, help="HUB_LLM for every worker (echo, anthropic, openai)"
    )
    up.add_argument(
        "--run-dir", default=None, help="state, logs, config (default $TMPDIR/hub-cluster-PORT)"
    )
    up.add_argument("--nginx", default=None, help="path of the nginx binary")
    up.add_argument("--redis-server", default=None, help="path of the redis-server binary")
    up.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each part to start"
    )
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `down`")
    up.set_defaults(func=cmd_up)

    for name, func, text in (
        ("down", cmd_down, "stop a running cluster"),
        ("status", cmd_status, "show it"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--port", type=int, default=8000, help="the cluster's nginx port (default 8000)"
        )
        cmd.add_argument("--run-dir", default=None, help="its run directory (default from --port)")
        cmd.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "Cluster",
    "ClusterError",
    "ManagedProcess",
    "Worker",
    "check_port_free",
    "find_binary",
    "free_port",
    "http_status",
    "main",
    "pid_alive",
    "read_upstream_template",
    "redis_ping",
    "render_local_nginx_conf",
]
