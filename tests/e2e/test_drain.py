"""SIGTERM drain behind nginx: the worker tells its clients to go (close 1012) and exits within
HUB_DRAIN_TIMEOUT plus a margin; the clients land on the other workers and resume with
nothing lost and nothing twice, while the conversation goes on.

The test stops a worker, so it has a cluster of its own.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import (
    WORKERS,
    assert_everyone_got_everything,
    chatter,
    check_deltas_per_connection,
    close_all,
    connect_on,
    count_members,
    echo_of,
    history_all,
    join_all,
    replies_seen,
    replies_streaming,
    report,
    send_reliably,
    settle,
    wait_all_received,
    wait_until,
    words,
)

pytestmark = pytest.mark.slow

MARGIN = 5.0
"""Seconds a draining worker may take beyond HUB_DRAIN_TIMEOUT before it counts as stuck."""


async def test_sigterm_drain_sends_clients_elsewhere_with_1012_and_loses_nothing(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster()
    members = [await connect_on(cluster, f"dr{i}", WORKERS[i % 3]) for i in range(6)]
    room, channel = "drain", "room:drain"
    try:
        await join_all(members, room)
        # One reply on hub2 that ends normally, one on hub1 longer than the drain lets run.
        kept_text = "@assistant " + words(200, "b")  # about 4 s, generated on hub2
        await send_reliably(members[1], kept_text, channel, "kept")
        await wait_until(replies_streaming(members[0], channel, 1), "the reply on hub2")
        cut_text = "@assistant " + words(400, "a")  # about 8 s, generated on hub1
        await send_reliably(members[0], cut_text, channel, "cut")
        await wait_until(replies_streaming(members[0], channel, 2), "the reply on hub1")
        talk = [asyncio.create_task(chatter(m, channel, 10, 0.25, m.user_id)) for m in members]
        await wait_until(lambda: all(len(m.ids(channel)) >= 6 for m in members), "chatter")

        loop = asyncio.get_running_loop()
        began = loop.time()
        code = await asyncio.to_thread(cluster.terminate_worker, 0, cluster.drain_timeout + MARGIN)
        drained_in = round(loop.time() - began, 1)  # reported, not asserted
        assert code == 0  # it exited by itself in time; a SIGKILL after the bound gives -9

        said = [ids for task in talk for ids in await task]
        kept, cut = replies_seen(members[1], channel)
        await wait_until(
            lambda: all(m.finals(kept) and m.finals(cut) for m in members),
            "both replies ended on every member",
        )
        stored = await history_all(members[1], channel)
        await wait_all_received(members, channel, stored)
        await settle(members)
        report(
            count_members(
                "sigterm-drain",
                members,
                channel,
                stored,
                sent=len(said) + 4,
                drained="hub1",
                drain_timeout_s=cluster.drain_timeout,
                exited_after_s=drained_in,
            )
        )
        assert len(stored) == len(said) + 4  # chatter, two questions, two replies
        assert_everyone_got_everything(members, channel, stored)

        (kept_entry,) = [m for m in stored if m.get("reply") == kept]
        assert (kept_entry["stop_reason"], kept_entry["text"]) == ("end", echo_of(kept_text))
        (cut_entry,) = [m for m in stored if m.get("reply") == cut]
        # Still running when the drain ended: handed over and finished by another worker.
        assert (cut_entry["stop_reason"], cut_entry["text"]) == ("end", echo_of(cut_text))
        assert cut_entry["taken_over"] is True
        for member in members:
            for reply, entry in ((kept, kept_entry), (cut, cut_entry)):
                (final,) = member.finals(reply)
                assert (final["id"], final["text"]) == (entry["id"], entry["text"])
            check_deltas_per_connection(member, kept)
            check_deltas_per_connection(member, cut)

        for moved in (members[0], members[3]):
            assert moved.close_codes[0] == 1012, moved.close_codes
            assert moved.workers[0] == "hub1"
            assert len(moved.workers) >= 2 and "hub1" not in moved.workers[1:], moved.workers
            for welcome in moved.welcomes()[1:]:
                assert welcome["resumed"] and all(welcome["resumed"].values()), welcome
        for stayed in members[1:3] + members[4:]:
            assert stayed.reconnects == 0
    finally:
        await close_all(members)
