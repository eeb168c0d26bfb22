"""Takeover with real processes: kill -9 of the worker generating a Claude reply (against the
loopback Messages API), and stop of a taken-over reply from another worker.

Each test kills a worker, so each has a cluster of its own.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from deploy.cluster import Cluster
from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import (
    WORKERS,
    E2EClient,
    check_deltas_per_connection,
    close_all,
    connect_on,
    echo_of,
    join_all,
    max_seq,
    reply_of,
    send_reliably,
    wait_until,
    words,
)
from tests.support.fake_anthropic import FakeAnthropic, Reply, fake_anthropic  # noqa: F401

pytestmark = pytest.mark.slow

ENDING = "and that is the end."


async def taken_over_counts(cluster: Cluster, indexes: list[int]) -> int:
    """``hub_replies_taken_over_total`` summed over the workers at ``indexes``."""
    total = 0.0
    async with aiohttp.ClientSession() as session:
        for index in indexes:
            async with session.get(cluster.worker(index).url + "/metrics") as response:
                text = await response.text()
            found = re.search(r"^hub_replies_taken_over_total (\S+)$", text, re.M)
            total += float(found.group(1)) if found else 0.0
    return int(total)


def assistant_text(message: dict[str, object]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    return "".join(str(block["text"]) for block in content)


@pytest.mark.parametrize("prefill", ["accepted", "refused"])
async def test_kill9_mid_claude_reply_is_continued_from_the_partial_text(
    fresh_cluster: ClusterFactory,
    fake_anthropic: FakeAnthropic,  # noqa: F811
    prefill: str,
) -> None:
    fake_anthropic.refuse_prefill = prefill == "refused"
    first = Reply(pieces=[f"w{i} " for i in range(80)], delay=0.08)  # about 6.5 s
    fake_anthropic.script(first, Reply(pieces=[" ", ENDING]))
    cluster = fresh_cluster(env=fake_anthropic.env())
    members = [await connect_on(cluster, f"kc{i}", WORKERS[i % 3]) for i in range(3)]
    channel = "room:claude"
    try:
        await join_all(members, "claude")
        await send_reliably(members[0], "@assistant count for me", channel, "ask")  # on hub1
        await wait_until(lambda: max_seq(members[1], channel=channel) >= 5, "the reply streaming")
        reply = reply_of(members[1], channel)
        seen = max_seq(members[1], reply)
        assert await asyncio.to_thread(cluster.kill_worker, 0) == -9
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await wait_until(lambda: max_seq(members[1], reply) > seen, "the continuation")
        print(f"TAKEOVER claude ({prefill}): kill -9 to next delta {loop.time() - killed_at:.2f} s")
        await wait_until(lambda: all(m.finals(reply) for m in members), "the end on every member")

        (done,) = members[1].dones(reply)
        assert done["taken_over"] is True and done["stop_reason"] == "end"
        assert done["text"].startswith("w0 w1 ") and done["text"].endswith(" " + ENDING)
        partial = done["text"][: -len(ENDING)]
        for member in members:
            (final,) = member.finals(reply)
            assert final["text"] == done["text"]
            check_deltas_per_connection(member, reply)  # no gap, no repeat, adds up
        # The continuation carried the partial reply as the last assistant turn, trimmed.
        continued = fake_anthropic.requests[1:]
        assert len(continued) == (1 if prefill == "accepted" else 2)
        last = continued[0].body["messages"][-1]
        assert (last["role"], assistant_text(last)) == ("assistant", partial.rstrip())
        if prefill == "refused":
            assert continued[1].body["messages"][-1]["role"] == "user"
            before = continued[1].body["messages"][-2]
            assert assistant_text(before) == partial.rstrip()
        assert await taken_over_counts(cluster, [1, 2]) == 1  # exactly one worker continued
    finally:
        await close_all(members)


async def test_stop_reaches_a_taken_over_reply_from_any_worker(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster()
    members = [await connect_on(cluster, f"ks{i}", WORKERS[i % 3]) for i in range(3)]
    channel = "room:stopper"
    try:
        await join_all(members, "stopper")
        text = "@assistant " + words(500, "s")  # about 10 s
        await send_reliably(members[0], text, channel, "ask")  # generated on hub1
        await wait_until(lambda: max_seq(members[1], channel=channel) >= 3, "the reply streaming")
        reply = reply_of(members[1], channel)
        seen = max_seq(members[1], reply)
        assert await asyncio.to_thread(cluster.kill_worker, 0) == -9
        await wait_until(lambda: max_seq(members[1], reply) > seen + 2, "the continuation")
        await members[2].stop(reply)  # from hub3, whichever worker took it over
        await wait_until(lambda: all(m.finals(reply) for m in members[1:]), "the end")
        (done,) = members[2].dones(reply)
        assert (done["stop_reason"], done["taken_over"]) == ("stopped", True)
        assert echo_of(text).startswith(done["text"]) and done["text"] != echo_of(text)
        for member in members[1:]:
            check_deltas_per_connection(member, reply, cut=True)
    finally:
        await close_all(members)


async def test_two_workers_racing_for_one_orphan_continue_it_once(
    fresh_cluster: ClusterFactory,
) -> None:
    """Both survivors sweep the same dead worker's replies; each reply goes to exactly one."""
    cluster = fresh_cluster()
    askers: list[E2EClient] = [await connect_on(cluster, f"kr{i}", "hub1") for i in range(4)]
    try:
        for i, asker in enumerate(askers):
            await send_reliably(asker, words(300, f"r{i}x"), None, f"ask{i}")
        await wait_until(
            lambda: all(max_seq(a, channel=f"dm:{a.user_id}") >= 3 for a in askers),
            "four replies streaming on hub1",
        )
        assert await asyncio.to_thread(cluster.kill_worker, 0) == -9
        await wait_until(
            lambda: all(a.finals(reply_of(a, f"dm:{a.user_id}")) for a in askers),
            "every reply ended",
        )
        for i, asker in enumerate(askers):
            reply = reply_of(asker, f"dm:{asker.user_id}")
            (final,) = asker.finals(reply)
            assert final["text"] == echo_of(words(300, f"r{i}x"))
            check_deltas_per_connection(asker, reply)
        assert await taken_over_counts(cluster, [1, 2]) == len(askers)
    finally:
        await close_all(askers)
