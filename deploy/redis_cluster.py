"""A local Redis Cluster: redis-server nodes in cluster mode on loopback, joined by redis-cli.

For a developer (``deploy/cluster.py up --redis-cluster``) and for tests, which also pull its
levers: kill the master owning a slot, wait for its replica to take over, restart a node,
move a slot to another master. Every wait is bounded; every method blocks (from async code
call it through ``asyncio.to_thread``).

Usage::

    with RedisClusterNodes(masters=3, replicas=1) as nodes:
        nodes.url                      # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
        port = nodes.master_of(key_slot("hub:log:{room:lobby}"))
        nodes.kill_node(port); nodes.wait_failover(slot, port)
        nodes.start_node(port)         # comes back as a replica of the new master
        nodes.migrate_slot(slot, other_master_port)

Only the standard library is used (a few lines of RESP speak to the nodes), like the rest
of ``deploy/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.processes import (
    ClusterError,
    ManagedProcess,
    find_binary,
    free_port,
    port_bindable,
    redis_ping,
    wait_until,
)

HASH_SLOTS = 16384
#: How long a node gets to exit on SIGTERM (with an append-only file it writes it first).
NODE_STOP_GRACE = 5.0
#: Keys moved per MIGRATE call when a slot changes hands.
MIGRATE_BATCH = 100

URL_SCHEME = "redis+cluster://"


class RedisReplyError(ClusterError):
    """A node answered a command with an error reply (``-ERR ...``, ``-MOVED ...``)."""


# --------------------------------------------------------------------------- RESP


def _encode(args: Sequence[object]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ClusterError("the connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ClusterError(f"unexpected reply from Redis: {line!r}")


def redis_call(
    port: int,
    *args: object,
    host: str = "127.0.0.1",
    password: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """Send one command to one node (after AUTH with ``password``) and return its reply; an
    error reply raises."""
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        sock.makefile("rb") as stream,
    ):
        if password is not None:
            sock.sendall(_encode(["AUTH", password]))
            if isinstance(denied := _read_reply(stream), RedisReplyError):
                raise denied
        sock.sendall(_encode(args))
        reply = _read_reply(stream)
    if isinstance(reply, RedisReplyError):
        raise reply
    return reply


# --------------------------------------------------------------------------- slots


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key or shard channel, hash tags (``{...}``) included."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % HASH_SLOTS


@dataclass
class NodeView:
    """One line of ``CLUSTER NODES``: what one node says about one node."""

    node_id: str
    port: int
    master: bool
    master_id: str | None
    failing: bool
    connected: bool
    slots: list[tuple[int, int]] = field(default_factory=list)

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """Parse ``CLUSTER NODES`` (slot ranges being imported/migrated, ``[...]``, are skipped)."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        flags = set(parts[2].split(","))
        slots = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(
            NodeView(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                master="master" in flags,
                master_id=None if parts[3] == "-" else parts[3],
                failing=bool(flags & {"fail", "fail?", "noaddr", "handshake"}),
                connected=parts[7] == "connected",
                slots=slots,
            )
        )
    return views


# --------------------------------------------------------------------------- the nodes


class RedisClusterNodes:
    """``masters * (1 + replicas)`` redis-server nodes on loopback, joined into one cluster.

    Ports given as ``ports`` (one per node) or picked free at construction; each node also
    gets a free cluster-bus port (``cluster-port``). ``node_timeout_ms`` is Redis'
    ``cluster-node-timeout``: a killed master is replaced about two of them later.
    ``appendonly`` keeps each node's data in an append-only file (fsync always), so a
    restarted node comes back with it. With ``password`` every node requires it (and its
    replicas use it), set from a config file only its owner can read, never on a command line. Logs go to ``log_dir`` (``redis-<port>.log``); data
    and ``nodes.conf`` to ``run_dir/node-<port>/``. A run_dir made here is removed by ``stop``.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        ports: Sequence[int] | None = None,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
        run_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        keep_run_dir: bool = False,
        redis_bin: str | None = None,
        redis_cli: str | None = None,
        start_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        password: str | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        count = masters * (1 + replicas)
        if ports is not None and len(ports) != count:
            raise ValueError(f"{len(ports)} ports given for {count} nodes")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.password = password
        self.start_timeout = start_timeout
        self._redis_bin = find_binary("redis-server", redis_bin)
        self._redis_cli = find_binary("redis-cli", redis_cli)
        self._extra_args = list(extra_args)
        self.ports: list[int] = list(ports) if ports else [free_port() for _ in range(count)]
        self.bus_ports = {port: free_port() for port in self.ports}
        self._own_run_dir = run_dir is None
        self._keep_run_dir = keep_run_dir
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="hub-redis-cluster-"))
        self.log_dir = Path(log_dir) if log_dir is not None else self.run_dir / "logs"
        self._lock = threading.RLock()
        self._created = False
        self.processes: dict[int, ManagedProcess] = {
            port: ManagedProcess(
                f"redis-{port}", self._argv(port), self.log_dir / f"redis-{port}.log"
            )
            for port in self.ports
        }

    # ---------------------------------------------------------------- addresses

    @property
    def seeds(self) -> str:
        """Every node as ``127.0.0.1:port``, comma-separated (the seed list of a client)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def url(self) -> str:
        """The hub's ``HUB_BROKER_URL`` for this cluster (with the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return URL_SCHEME + auth + self.seeds

    def running_ports(self) -> list[int]:
        return [port for port in self.ports if self.processes[port].alive()]

    # ---------------------------------------------------------------- life

    def start(self) -> RedisClusterNodes:
        """Start every node that is not running; the first time join them (``redis-cli
        --cluster create``), later they rejoin from their nodes.conf; wait until all say ok."""
        with self._lock:
            try:
                stopped = [port for port in self.ports if not self.processes[port].alive()]
                for port in stopped:
                    self._start_process(port)
                for port in stopped:
                    self._wait_ping(port)
                if not self._created:
                    self._create()
                    self._created = True
                self.wait_ok()
            except BaseException:
                with contextlib.suppress(ClusterError):
                    self.stop()
                raise
            return self

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL after a grace), then remove a run_dir made here."""
        with self._lock:
            errors = []
            for process in self.processes.values():
                process.send(signal.SIGTERM)
            for process in self.processes.values():
                try:
                    process.stop(NODE_STOP_GRACE)
                except ClusterError as exc:
                    errors.append(str(exc))
            if self._own_run_dir and not self._keep_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self._created = False
            if errors:
                raise ClusterError("; ".join(errors))

    def kill(self) -> None:
        """SIGKILL every node at once (a crash of the whole cluster); ``start`` brings it back."""
        with self._lock:
            for process in self.processes.values():
                process.kill()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- what the cluster says

    def call(self, port: int, *args: object) -> Any:
        """One command on the node at ``port``."""
        return redis_call(port, *args, password=self.password)

    def info(self, port: int, section: str) -> dict[str, str]:
        """``INFO section`` (or ``CLUSTER INFO`` for ``section="cluster-info"``) as a dict."""
        text = (
            self.call(port, "CLUSTER", "INFO")
            if section == "cluster-info"
            else self.call(port, "INFO", section)
        )
        pairs = (line.split(":", 1) for line in str(text).splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def topology(self, port: int | None = None) -> list[NodeView]:
        """``CLUSTER NODES`` as seen by ``port`` (default: the first running node)."""
        ask = port if port is not None else self._any_running()
        return parse_cluster_nodes(str(self.call(ask, "CLUSTER", "NODES")))

    def master_of(self, slot: int) -> int:
        """Port of the master that owns ``slot``, as the running nodes see it."""
        for view in self.topology():
            if view.master and view.owns(slot) and not view.failing:
                return view.port
        raise ClusterError(f"no live master owns slot {slot}")

    def masters_ports(self) -> list[int]:
        """Ports of the live masters that own slots."""
        return sorted(v.port for v in self.topology() if v.master and v.slots and not v.failing)

    def replicas_of(self, port: int) -> list[int]:
        """Ports of the replicas of the master at ``port``."""
        views = self.topology()
        master_id = next(v.node_id for v in views if v.port == port)
        return sorted(v.port for v in views if v.master_id == master_id)

    def node_id(self, port: int) -> str:
        return str(self.call(port, "CLUSTER", "MYID"))

    def is_healthy(self) -> bool:
        """True when every running node says ``cluster_state:ok``, all agree who owns every
        slot, every owner runs, and every running replica is linked to its master."""
        running = self.running_ports()
        if not running:
            return False
        owners: set[tuple[tuple[int, int], ...]] = set()
        try:
            for port in running:
                if self.info(port, "cluster-info").get("cluster_state") != "ok":
                    return False
                views = self.topology(port)
                owned = tuple(sorted((low, v.port) for v in views for low, _ in v.slots))
                owners.add(owned)
                covered = sum(high - low + 1 for v in views for low, high in v.slots)
                if covered != HASH_SLOTS or any(v.slots and v.port not in running for v in views):
                    return False
                replication = self.info(port, "replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return False
        except (OSError, ClusterError):
            return False
        return len(owners) == 1

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_healthy`."""
        wait_until(
            self.is_healthy,
            self.start_timeout if timeout is None else timeout,
            "every Redis Cluster node to report cluster_state:ok and agree on its slots",
        )

    # ---------------------------------------------------------------- faults

    def kill_node(self, port: int) -> int | None:
        """SIGKILL the node at ``port`` (a crash); its exit status (-9)."""
        with self._lock:
            return self.processes[port].kill()

    def stop_node(self, port: int) -> int | None:
        """SIGTERM the node at ``port`` and wait for it; its exit status."""
        with self._lock:
            return self.processes[port].stop(NODE_STOP_GRACE)

    def start_node(self, port: int, wait: bool = True) -> None:
        """Start the node at ``port`` again (same node id, from its nodes.conf); with ``wait``,
        until the whole cluster is healthy again (a former master rejoins as a replica)."""
        with self._lock:
            self._start_process(port)
            self._wait_ping(port)
        if wait:
            self.wait_ok()

    def restart_node(self, port: int, graceful: bool = True) -> None:
        """Stop (or kill) the node at ``port``, start it again, wait until healthy."""
        if graceful:
            self.stop_node(port)
        else:
            self.kill_node(port)
        self.start_node(port)

    def kill_master_of(self, slot: int) -> int:
        """SIGKILL the master owning ``slot``; its port."""
        port = self.master_of(slot)
        self.kill_node(port)
        return port

    def wait_failover(self, slot: int, old_port: int, timeout: float | None = None) -> int:
        """Wait until a replica has taken ``slot`` over from ``old_port`` and the cluster is ok
        again; the new master's port."""
        found: list[int] = []

        def promoted() -> bool:
            if not self.is_healthy():
                return False
            port = self.master_of(slot)
            found[:] = [port]
            return port != old_port

        wait_until(
            promoted,
            self.start_timeout if timeout is None else timeout,
            f"a replica to take slot {slot} over from the node at port {old_port}",
        )
        return found[0]

    def migrate_slot(self, slot: int, to_port: int) -> int:
        """Move ``slot`` with its keys to the master at ``to_port``, as ``redis-cli --cluster
        reshard`` does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE everywhere);
        the port of its former owner."""
        with self._lock:
            from_port = self.master_of(slot)
            if from_port == to_port:
                return from_port
            source, target = self.node_id(from_port), self.node_id(to_port)
            self.call(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source)
            self.call(from_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target)
            while True:
                keys = self.call(from_port, "CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
                if not keys:
                    break
                auth = ["AUTH", self.password] if self.password else []
                self.call(
                    from_port, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, *auth, "KEYS", *keys
                )
            # The new owner first, so the cluster never has no owner for the slot.
            for port in [to_port, from_port, *self.masters_ports()]:
                with contextlib.suppress(RedisReplyError):
                    self.call(port, "CLUSTER", "SETSLOT", slot, "NODE", target)
        self.wait_ok()
        return from_port

    # ---------------------------------------------------------------- internals

    def _argv(self, port: int) -> list[str]:
        data_dir = self.run_dir / f"node-{port}"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        return [
            self._redis_bin,
            str(data_dir / "redis.conf"),  # the password, if any: not on the command line
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_ports[port]),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            *persistence,
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--logfile", "",
            *self._extra_args,
        ]  # fmt: skip

    def _start_process(self, port: int) -> None:
        for needed in (port, self.bus_ports[port]):
            try:
                wait_until(partial(port_bindable, needed), 5.0, f"port {needed} to be free")
            except ClusterError:
                raise ClusterError(f"port {needed} for Redis node {port} is in use") from None
        data_dir = self.run_dir / f"node-{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = f"requirepass {self.password}\nmasterauth {self.password}\n"
        fd = os.open(data_dir / "redis.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret if self.password else "")
        self.processes[port].start()

    def _wait_ping(self, port: int) -> None:
        wait_until(
            lambda: redis_ping("127.0.0.1", port),
            self.start_timeout,
            f"Redis node on port {port} to answer PING",
            self.processes[port],
        )

    def _create(self) -> None:
        argv = [
            self._redis_cli,
            "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password else None
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.start_timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"redis-cli --cluster create took over {self.start_timeout} s"
            ) from None
        if done.returncode != 0:
            raise ClusterError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def _any_running(self) -> int:
        for port in self.ports:
            if self.processes[port].alive():
                return port
        raise ClusterError("no Redis Cluster node is running")


__all__ = [
    "HASH_SLOTS",
    "URL_SCHEME",
    "NodeView",
    "RedisClusterNodes",
    "RedisReplyError",
    "key_slot",
    "parse_cluster_nodes",
    "redis_call",
]
