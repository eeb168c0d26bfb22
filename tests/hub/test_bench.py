"""``hub bench`` against a live hub: every delivery counted, server CPU and memory reported."""

from __future__ import annotations

import re

import pytest

from hub.bench import BenchError, run_bench
from tests.conftest import HubFactory


async def test_bench_reports_deliveries_cpu_and_memory(
    start_hub: HubFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = await start_hub(rate=1000.0, rate_burst=1000, guest_rooms=["bench"])
    code = await run_bench(hub.url, users=4, messages=3, room="bench", interval=0.01)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "deliveries 48/48" in out
    assert re.search(r"server CPU per delivery: \d+\.\d µs \(1 worker\(s\) scraped\)", out), out
    assert re.search(r"with 4 connections: -?\d+\.\d KiB per connection", out), out


async def test_bench_says_why_when_guests_may_not_join(start_hub: HubFactory) -> None:
    hub = await start_hub(guest_rooms=["lobby"])
    with pytest.raises(BenchError, match=r"could not join room 'bench'.*HUB_GUEST_ROOMS"):
        await run_bench(hub.url, users=1, messages=1, room="bench", interval=0.01)


async def test_bench_over_several_rooms_and_in_dms(
    start_hub: HubFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = await start_hub(rate=1000.0, rate_burst=1000, guest_rooms=["bench0", "bench1"])
    code = await run_bench(hub.url, users=4, messages=3, room="bench", interval=0.01, rooms=2)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "deliveries 24/24" in out  # two rooms of two: each message reaches two members
    code = await run_bench(hub.url, users=3, messages=2, room="bench", interval=0.01, dm=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "deliveries 6/6" in out  # each user's own messages, not the assistant's answers
