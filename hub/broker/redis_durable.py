"""Durable appends: a stored message acknowledged only once N replicas have it (Redis WAIT).

WAIT counts only the writes of the connection it is sent on, so it must follow the append on
that same connection: one pipeline (EVAL rather than EVALSHA, so a new master's empty script
cache cannot split the two). On a cluster both go to the master owning the channel's slot.
Too few replicas in time raises: the message is stored but not yet safe, the caller answers
``unavailable``, and a retry with the same dedupe key waits for it again (the append script
then writes the dedupe key's TTL again, so the retry's WAIT covers the first store too).
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError


async def append_and_wait(
    client: Redis | RedisCluster,
    script: str,
    keys: list[str],
    args: list[str | int],
    replicas: int,
    op_timeout: float,
) -> list[str]:
    """Run the append ``script`` and WAIT for ``replicas`` (up to half of ``op_timeout``)."""
    wait_ms = max(1, round(op_timeout * 500))
    pipe = client.pipeline(transaction=False)
    pipe.eval(script, len(keys), *keys, *args)
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot map, if this is the client's first command
        owner = client.get_node_from_key(keys[0])
        pipe.execute_command("WAIT", replicas, wait_ms, target_nodes=owner)
    else:
        pipe.execute_command("WAIT", replicas, wait_ms)
    result, acked = await pipe.execute()
    if result[0] != "gone" and int(acked) < replicas:
        raise RedisError(
            f"only {acked} of {replicas} replicas confirmed message {result[1]} "
            f"within {wait_ms} ms (HUB_REDIS_WAIT_REPLICAS)"
        )
    return cast(list[str], result)
