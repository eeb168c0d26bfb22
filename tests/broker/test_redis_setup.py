"""How a RedisBroker is built: from URLs and settings, and the names it gives Redis."""

from __future__ import annotations

import re

import fakeredis
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.crc import key_slot

from hub.broker import BrokerError, create_broker
from hub.broker.redis import RedisBroker
from hub.broker.redis_connect import parse_cluster_url
from hub.broker.redis_names import RedisNames
from hub.settings import Settings
from tests.broker.conftest import Frames
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer


async def test_unix_socket_url() -> None:
    with RedisServer(unix_socket=True) as server:
        broker = RedisBroker.from_url(server.unix_url, prefix="unix")
        frames = Frames()
        await broker.start(frames, frames.on_reconnect)
        try:
            await broker.subscribe("room:u")
            result = await broker.append("room:u", '{"text":"over a socket"}')
            assert result is not None
            await frames.until(lambda: frames.payloads("room:u"))
            assert await broker.ping()
        finally:
            await broker.close()


async def test_create_broker_uses_prefix_and_history_max(shared_redis: RedisServer) -> None:
    if not shared_redis.running:
        shared_redis.start()
    settings = Settings(broker_url=shared_redis.url, redis_prefix="custom", history_max=10)
    broker = create_broker(settings)
    assert isinstance(broker, RedisBroker)
    raw = Redis.from_url(shared_redis.url, decode_responses=True)
    try:
        await raw.flushall()
        for i in range(12):
            await broker.append("room:p", f'{{"n":{i}}}')
        page, more = await broker.history("room:p", None, 100)
        assert len(page) == 10 and not more
        keys = [str(k) for k in await raw.keys("*")]
        assert keys and all(k.startswith("custom:") for k in keys)
    finally:
        await raw.aclose()
        await broker.close()


def test_client_must_decode_responses() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBroker(fakeredis.FakeAsyncRedis())


def test_names_of_one_channel_share_a_cluster_slot() -> None:
    names = RedisNames("hub")
    channel = "room:lobby"
    together = [
        names.pub(channel),
        names.log(channel),
        names.meta(channel),
        names.ref(channel, "alice:ref-1"),
        names.inflight(channel),
        names.deltas(channel, "r1"),
    ]
    assert len({key_slot(name.encode()) for name in together}) == 1
    assert all(name.startswith("hub:") for name in together)
    assert names.topic_of(names.pub("dm:alice")) == "dm:alice"
    assert names.topic_of("other:pub:{dm:alice}") is None
    assert names.deltas(channel, "") + "r1" == names.deltas(channel, "r1")


def test_cluster_url_names_seeds_password_and_tls() -> None:
    parsed = parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/")
    assert parsed.seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert parsed.options == {}
    assert parsed.where == "Redis Cluster 10.0.0.1:7000,10.0.0.2:7001"
    secure = parse_cluster_url(
        "rediss+cluster://hub:p%40ss@[::1]:7000,redis-2:7000?ssl_cert_reqs=none"
    )
    assert secure.seeds == [("::1", 7000), ("redis-2", 7000)]
    assert secure.options == {
        "username": "hub",
        "password": "p@ss",
        "ssl": True,
        "ssl_cert_reqs": "none",
    }
    assert parse_cluster_url("redis+cluster://:secret@h:1").options == {"password": "secret"}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://h:1/3", "only database 0"),
        ("redis+cluster://h", "not host:port"),
        ("redis+cluster://h:1,,h:2", "not host:port"),
        ("redis+cluster://h:1?db=2", "unknown option 'db'"),
        ("redis://h:1", "starts with redis+cluster://"),
    ],
)
def test_bad_cluster_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_cluster_url(url)


def test_settings_take_a_cluster_url_and_the_wait_setting() -> None:
    settings = Settings(broker_url="redis+cluster://h:1,h:2", redis_wait_replicas=1)
    broker = create_broker(settings)
    assert isinstance(broker, RedisBroker)
    with pytest.raises(ValidationError, match="redis\\+cluster://"):
        Settings(broker_url="cluster://h:1")
    with pytest.raises(ValidationError):
        Settings(redis_wait_replicas=-1)


async def test_wait_replicas_acks_only_what_replicas_confirmed(
    shared_redis_cluster: RedisClusterNodes,
) -> None:
    safe = RedisBroker.from_url(shared_redis_cluster.url, prefix="wait", wait_replicas=1)
    greedy = RedisBroker.from_url(shared_redis_cluster.url, prefix="wait", wait_replicas=2)
    try:
        first = await safe.append("room:w", '{"n":1}', dedupe="u:1")
        assert first is not None and not first.duplicate
        # Every master here has one replica: two never confirm. The message is stored, not
        # acknowledged; a retry with the same dedupe key is refused the same way, not doubled.
        for _ in range(2):
            with pytest.raises(BrokerError, match="only 1 of 2 replicas"):
                await greedy.append("room:w", '{"n":2}', dedupe="u:2")
        again = await safe.append("room:w", '{"n":2}', dedupe="u:2")
        assert again is not None and again.duplicate
        entries, _ = await safe.history("room:w", None, 10)
        assert [e.body for e in entries] == ['{"n":1}', '{"n":2}']
    finally:
        await safe.close()
        await greedy.close()
