"""Redis stopped for a few seconds mid-conversation, then started again on the same port.

With an append-only file (what a production Redis keeps) the data survives: while Redis is
down /health says 503 and a send gets ``error unavailable`` on a WebSocket that stays open;
once it is back the workers reconnect and resubscribe by themselves, the failed send goes
through when retried with the same ref, and every stored message reaches every member once.
Without persistence Redis comes back empty: resuming clients are told ``resumed: false``.

Each test stops Redis, so each has a cluster of its own.
"""

from __future__ import annotations

import asyncio

import pytest

from deploy.cluster import http_status
from hub.client import HubClientError
from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import (
    WAIT,
    WORKERS,
    Counts,
    E2EClient,
    all_got_text,
    assert_everyone_got_everything,
    chatter,
    check_deltas_per_connection,
    close_all,
    connect_on,
    count_members,
    echo_of,
    history_all,
    join_all,
    max_seq,
    reply_of,
    report,
    send_reliably,
    settle,
    wait_all_received,
    wait_until,
    words,
)

pytestmark = pytest.mark.slow

QUIET_ROOMS = 50
"""Rooms of their own that a few users join, so every worker serves that many channels."""

OUTAGE = 3.0
"""Seconds Redis stays down (longer than the reply lease and the presence TTL)."""


async def test_redis_stopped_and_started_again_keeps_the_conversation_going(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster(redis_persist=True)
    members = [await connect_on(cluster, f"ro{i}", WORKERS[i % 3]) for i in range(6)]
    room, channel = "outage", "room:outage"
    newcomer: asyncio.Task[E2EClient] | None = None
    talk: list[asyncio.Task[list[str]]] = []
    # Each worker carries many quiet channels besides the busy room (subscribed first), so
    # catching up after the outage takes a while on each: the busy room keeps talking.
    busy = [await connect_on(cluster, f"ro-many{i}", w) for i, w in enumerate(WORKERS)]
    try:
        for other in busy:
            for n in range(QUIET_ROOMS):
                await other.join(f"quiet-{other.user_id}-{n}", timeout=WAIT)
        await join_all(members, room)
        said = list(
            await asyncio.gather(*(chatter(m, channel, 2, 0.05, m.user_id) for m in members))
        )
        long_text = "@assistant " + words(250, "o")  # about 5 s: streams across the outage
        await send_reliably(members[1], long_text, channel, "long")  # generated on hub2
        await wait_until(
            lambda: all(max_seq(m, channel=channel) >= 5 for m in members), "the reply streaming"
        )
        long_reply = reply_of(members[1], channel)
        # Everyone keeps talking through the outage: a send refused meanwhile is sent again
        # with the same ref until it is acknowledged.
        talk = [
            asyncio.create_task(chatter(m, channel, 12, 0.4, f"{m.user_id}-on")) for m in members
        ]
        await wait_until(lambda: all(len(m.ids(channel)) >= 16 for m in members), "chatter")

        assert await asyncio.to_thread(cluster.stop_redis) == 0
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await wait_until_async_status(cluster.url + "/health", 503, "503 from /health via nginx")
        with pytest.raises(HubClientError) as refused:
            await members[0].send_ref("sent during the outage", channel, "during", WAIT)
        assert refused.value.code == "unavailable"
        assert members[0].state == "open" and members[0].reconnects == 0  # the socket stays open
        # Someone who connects while Redis is down gets in once it is back.
        newcomer = asyncio.create_task(connect_on(cluster, "ro-new", WORKERS[0], attempts=30))
        await asyncio.sleep(max(0.0, OUTAGE - (loop.time() - stopped)))

        await asyncio.to_thread(cluster.start_redis)
        await asyncio.to_thread(cluster.wait_healthy, 30)
        retried = await send_reliably(members[0], "sent during the outage", channel, "during")
        again = await send_reliably(members[0], "sent during the outage", channel, "during")
        assert again == retried  # the same ref is stored once
        said.append([retried])
        said += [await task for task in talk]
        short_text = "@assistant " + words(10, "after")
        await send_reliably(members[2], short_text, channel, "short")  # generated on hub3
        await wait_until(
            lambda: (
                all(m.finals(long_reply) for m in members)
                and all_got_text(members, channel, echo_of(short_text))()
            ),
            lambda: (
                "both replies ended on every member: "
                + str(
                    {
                        m.label: (
                            [d["stop_reason"] for d in m.finals(long_reply)],
                            all_got_text([m], channel, echo_of(short_text))(),
                            max_seq(m, long_reply),
                        )
                        for m in members
                    }
                )
            ),
        )
        stored = await history_all(members[1], channel)
        await wait_all_received(members, channel, stored)
        await settle(members)
        sent = sum(len(ids) for ids in said) + 4  # two questions, two replies
        report(
            count_members(
                "redis-outage-persisted", members, channel, stored, sent=sent, outage_s=OUTAGE
            )
        )
        assert len(stored) == sent
        assert_everyone_got_everything(members, channel, stored)
        (entry,) = [m for m in stored if m.get("reply") == long_reply]
        assert entry["stop_reason"] == "end"  # its worker lived: the outage did not cut it
        assert entry["text"] == echo_of(long_text)
        assert "taken_over" not in entry  # nobody mistook the outage for its worker's death
        for member in members:
            assert member.reconnects == 0 and len(member.workers) == 1, member.workers
            (final,) = member.finals(long_reply)
            assert (final["id"], final["text"]) == (entry["id"], entry["text"])
            check_deltas_per_connection(member, long_reply)  # no seq gap, deltas add up
        came_in = await asyncio.wait_for(newcomer, WAIT)
        await came_in.close()
    finally:
        for task in [*talk, *([newcomer] if newcomer else [])]:
            task.cancel()
        await close_all([*members, *busy])


async def wait_until_async_status(url: str, status: int, what: str) -> None:
    """Poll ``url`` (off the event loop) until it answers ``status``."""
    seen: list[int | None] = []

    async def probe() -> bool:
        seen.append(await asyncio.to_thread(http_status, url))
        return seen[-1] == status

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last answers {seen[-5:]}")
        await asyncio.sleep(0.1)


async def test_redis_restarted_empty_makes_resuming_clients_reload(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster()  # no persistence: Redis comes back empty
    members = [await connect_on(cluster, f"re{i}", w) for i, w in enumerate(WORKERS)]
    room, channel = "empty", "room:empty"
    try:
        await join_all(members, room)
        for i, member in enumerate(members):
            await send_reliably(member, f"room {i}", channel, f"r{i}")
            await send_reliably(member, f"dm {i}", None, f"d{i}")
        await wait_until(
            lambda: (
                all(len(m.ids(channel)) == 3 for m in members)
                and all(
                    all_got_text([m], f"dm:{m.user_id}", f"Echo: dm {i}")()
                    for i, m in enumerate(members)
                )
            ),
            "room messages and dm replies everywhere",
        )
        lost = sum(len(m.ids(channel)) for m in members[:1]) + sum(
            len(m.ids(f"dm:{m.user_id}")) for m in members
        )

        assert await asyncio.to_thread(cluster.stop_redis) == 0
        await wait_until_async_status(cluster.url + "/health", 503, "503 from /health via nginx")
        await asyncio.to_thread(cluster.start_redis)
        await asyncio.to_thread(cluster.wait_healthy, 30)

        await wait_until(
            lambda: all(len(m.welcomes()) >= 2 for m in members),
            lambda: (
                "every client to resume; close codes "
                + str({m.label: m.close_codes for m in members})
            ),
        )
        for member in members:
            dm = f"dm:{member.user_id}"
            assert 1012 in member.close_codes, member.close_codes
            resumed = member.welcomes()[1]["resumed"]
            assert resumed == {dm: False, channel: False}, resumed

        for i, member in enumerate(members):  # the conversation goes on in a new log
            await send_reliably(member, f"again {i}", None, f"again{i}")
        await wait_until(
            lambda: all(
                all_got_text([m], f"dm:{m.user_id}", f"Echo: again {i}")()
                for i, m in enumerate(members)
            ),
            "dm replies after the restart",
        )
        await settle(members)
        received, duplicates, stored_total = [], 0, 0
        for i, member in enumerate(members):
            dm = f"dm:{member.user_id}"
            stored = await history_all(member, dm)  # the new log: nothing from before
            assert [m["text"] for m in stored] == [f"again {i}", f"Echo: again {i}"]
            assert_everyone_got_everything([member], dm, stored)
            stored_total += len(stored)
            ids = member.ids(dm)
            received.append(len({m["id"] for m in stored} & set(ids)))
            duplicates += len(ids) - len(set(ids))
        report(
            Counts(
                "redis-restarted-empty",
                sent=2 * len(members),
                stored=stored_total,
                received=received,
                duplicates=duplicates,
                extra={
                    "channels": "each member's own dm, after the restart",
                    "stored_before_restart_lost": lost,
                    "resumed_false": len(members),
                },
            )
        )
    finally:
        await close_all(members)
