"""How the broker connects: ``redis://`` (and ``rediss://``, ``unix://``) or a Redis Cluster
by ``redis+cluster://`` seeds, always with short timeouts and no hidden retries (a retried
Lua append could store a message twice; callers retry with their dedupe key instead)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from hub.broker.redis_shards import NodeClient

POOL_SIZE = 1000
"""Command connections a worker may open to one Redis (pub/sub has its own)."""
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class ClusterURL:
    """What a ``redis+cluster://`` URL says: seed nodes and the options of every connection."""

    seeds: list[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The seeds, for log lines and errors (no password)."""
        return "Redis Cluster " + ",".join(f"{host}:{port}" for host, port in self.seeds)


def parse_cluster_url(url: str) -> ClusterURL:
    """Read ``redis+cluster://[user:password@]host:port[,host:port...][?ssl_cert_reqs=...]``
    (``rediss+cluster://`` for TLS); ValueError naming what is wrong."""
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"a Redis Cluster URL starts with {' or '.join(CLUSTER_SCHEMES)}")
    rest, _, query = url[len(scheme) :].partition("?")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0; drop the /db part of the URL")
    userinfo, _, hosts = netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    if scheme.startswith("rediss"):
        options["ssl"] = True
    for key, values in parse_qs(query).items():
        if key not in _TLS_OPTIONS:
            raise ValueError(f"unknown option {key!r} in the Redis Cluster URL")
        options[key] = values[-1]
    seeds = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port (seed nodes are comma-separated)")
        seeds.append((host, int(port)))
    return ClusterURL(seeds, options)


def cluster_clients(url: str, common: dict[str, Any]) -> tuple[RedisCluster, NodeClient, str]:
    """The cluster client for commands, a maker of per-node clients for pub/sub, and a name
    for messages; ``common`` holds the connection options of both (timeouts, no retries)."""
    parsed = parse_cluster_url(url)
    options = {**common, **parsed.options}
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
        # Re-read the whole slot map at the first MOVED: after a failover or a migration
        # every worker learns it at once instead of slot by slot.
        reinitialize_steps=1,
        **options,
    )

    def node_client(host: str, port: int) -> Redis:
        return Redis(host=host, port=port, **options)

    return cluster, node_client, parsed.where


@dataclass
class Clients:
    """What a broker URL opens: the command client, and for a cluster a maker of per-node
    clients (for sharded pub/sub) and the seeds to name in messages."""

    client: Redis | RedisCluster
    node_client: NodeClient | None = None
    where: str | None = None


def connect(url: str, timeout: float) -> Clients:
    """Clients for ``url`` whose every command and connect gives up after ``timeout`` s."""
    tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        **tcp,
    }
    if not url.startswith(CLUSTER_SCHEMES):
        # redis-py's pool refuses a command past 100 connections ("Too many connections"):
        # a burst of sessions (a join storm) needs more, opened on demand.
        return Clients(Redis.from_url(url, max_connections=POOL_SIZE, **common))
    return Clients(*cluster_clients(url, common))
