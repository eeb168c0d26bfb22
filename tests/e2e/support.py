"""Helpers of the end-to-end suite: a real cluster, clients placed through nginx, exact counts.

Everything here talks to real processes (redis-server, ``hub serve`` workers, nginx) through
``deploy.cluster.Cluster``. Clients connect through nginx; a client is placed on a worker by
reconnecting until the ``welcome`` names that worker (bounded), never by dialling the worker's
own port. Every wait is bounded and fails with what it was waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.cluster import REPO_ROOT, Cluster
from hub.auth import mint_token
from hub.client import HubClient, HubClientError
from hub.protocol import parse_id
from tests.support.presence_view import online_view

E2E_ENV = {
    "HUB_LLM": "echo",
    "HUB_ECHO_DELAY": "0.02",  # one word per 20 ms: a 200-word text streams for about 4 s
    "HUB_DELTA_INTERVAL": "0.04",
    "HUB_WORKER_TTL": "2.5",
    "HUB_PRESENCE_TTL": "3",
    "HUB_RATE": "100",
    "HUB_RATE_BURST": "100",
    "HUB_DRAIN_TIMEOUT": "5",
    "HUB_HEARTBEAT": "20",
    "HUB_ROOM_CREATE_BURST": "200",
    "HUB_ROOM_BURST": "200",  # the outage tests open 50 quiet rooms per user
}
"""Settings of every worker: the default heartbeat TTL, a slow echo so faults land mid-reply."""

WORKERS = ("hub1", "hub2", "hub3")
FAULT_COUNTS = REPO_ROOT / "test-output" / "fault-counts.jsonl"
REPORTED: list[str] = []
"""The FAULT lines of this run, printed again in the terminal summary (see conftest)."""

WAIT = 20.0
"""Default bound of a wait for a condition (generous: two cores run the whole suite)."""


def words(count: int, tag: str) -> str:
    """A text of ``count`` distinct words; its echo streams for about count * 20 ms."""
    return " ".join(f"{tag}{i}" for i in range(count))


def echo_of(text: str) -> str:
    """What the echo assistant answers to ``text`` (mentions of @assistant removed)."""
    return "Echo: " + " ".join(text.replace("@assistant", "").split())


def token(cluster: Cluster, user_id: str, name: str | None = None) -> str:
    return mint_token(cluster.secret, user_id, name or user_id.title(), 3600)


async def wait_until(
    check: Callable[[], bool], what: str | Callable[[], str], timeout: float = WAIT
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` s saying what did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        await asyncio.sleep(0.05)


class E2EClient(HubClient):
    """HubClient that also records close codes and can send with a ref of the caller's."""

    def __init__(self, cluster: Cluster, user_id: str, label: str | None = None) -> None:
        # backoff_max 2 s: a test never waits half a minute for a reconnect after a fault.
        super().__init__(cluster.url, token(cluster, user_id), backoff_max=2.0)
        self.user_id = user_id
        self.label = label or user_id
        self.close_codes: list[int | None] = []

    async def _session_once(self) -> int | None:
        code = await super()._session_once()
        self.close_codes.append(code)
        return code

    async def send_ref(self, text: str, channel: str | None, ref: str, timeout: float) -> str:
        """One ``send`` with this ``ref`` (what HubClient.request does, with a chosen ref)."""
        frame: dict[str, Any] = {"type": "send", "text": text, "ref": ref}
        if channel is not None:
            frame["channel"] = channel
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (frame, future)
        try:
            if self.state == "open":
                await self._write(frame)
            ack = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ref, None)
        return str(ack["id"])

    # -- what arrived -------------------------------------------------------------------
    def connections(self) -> list[list[dict[str, Any]]]:
        """Raw frames split per connection: each list starts with that connection's welcome."""
        out: list[list[dict[str, Any]]] = []
        for frame in self.raw:
            if frame.get("type") == "welcome":
                out.append([])
            if out:
                out[-1].append(frame)
        return out

    def stored_frames(self, channel: str) -> list[dict[str, Any]]:
        """Every raw ``message`` and ``done`` of ``channel``: frames of stored messages."""
        return [
            f
            for f in self.raw
            if f.get("type") in ("message", "done") and f.get("channel") == channel
        ]

    def ids(self, channel: str) -> list[str]:
        return [str(f["id"]) for f in self.stored_frames(channel)]

    def dones(self, reply: str) -> list[dict[str, Any]]:
        return [f for f in self.raw if f.get("type") == "done" and f.get("reply") == reply]

    def finals(self, reply: str) -> list[dict[str, Any]]:
        """The reply's end as it reached this client: live as ``done``, or as the stored
        ``message`` when it was stored while this client (or its worker) was cut off."""
        return [
            f for f in self.raw if f.get("type") in ("done", "message") and f.get("reply") == reply
        ]

    def deltas(self, reply: str) -> list[dict[str, Any]]:
        return [f for f in self.raw if f.get("type") == "delta" and f.get("reply") == reply]

    def presence(self, room: str) -> set[str] | None:
        """Member ids this client sees online in ``room`` (snapshot, then diffs), None before any."""
        view = online_view(self.raw, room)
        return None if view is None else set(view)

    def welcomes(self) -> list[dict[str, Any]]:
        return [f for f in self.raw if f.get("type") == "welcome"]


def all_got_text(clients: list[E2EClient], channel: str, text: str) -> Callable[[], bool]:
    """A check for ``wait_until``: every client received a stored message with ``text``."""

    def check() -> bool:
        return all(any(f["text"] == text for f in c.stored_frames(channel)) for c in clients)

    return check


def replies_seen(client: E2EClient, channel: str) -> list[str]:
    """Ids of the replies the client saw streaming in ``channel``, in the order they began."""
    seen: dict[str, None] = {}
    for frame in client.raw:
        if frame.get("type") == "delta" and frame.get("channel") == channel:
            seen.setdefault(str(frame["reply"]), None)
    return list(seen)


def replies_streaming(client: E2EClient, channel: str, count: int) -> Callable[[], bool]:
    """A check for ``wait_until``: the client saw ``count`` replies of ``channel`` stream."""

    def check() -> bool:
        return len(replies_seen(client, channel)) >= count

    return check


async def connect_on(
    cluster: Cluster, user_id: str, worker: str, label: str | None = None, attempts: int = 15
) -> E2EClient:
    """A client connected through nginx whose welcome came from ``worker``.

    nginx balances round robin without stickiness, so a few attempts land there; the ones
    that land elsewhere are closed again.
    """
    landed: list[str] = []
    for _ in range(attempts):
        client = E2EClient(cluster, user_id, label)
        await client.connect(timeout=WAIT)
        if client.workers[-1] == worker:
            return client
        landed.append(client.workers[-1])
        await client.close()
    raise AssertionError(f"{user_id}: no welcome from {worker} in {attempts} tries: {landed}")


async def close_all(clients: Iterable[HubClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def send_reliably(
    client: E2EClient, text: str, channel: str | None, ref: str, timeout: float = 40.0
) -> str:
    """Send until acknowledged, always with the same ``ref``: after an ``unavailable`` error,
    a timeout or a drop the same frame goes again, and the hub stores it once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    errors: list[str] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"{client.label}: send {ref} never acknowledged: {errors}")
        try:
            return await client.send_ref(text, channel, ref, min(remaining, 10.0))
        except HubClientError as exc:
            if exc.code not in ("unavailable", "rate_limited"):
                raise
            errors.append(exc.code)
            await asyncio.sleep(min(exc.retry_after or 0.5, 1.0))
        except TimeoutError:
            errors.append("timeout")


async def history_all(client: HubClient, channel: str) -> list[dict[str, Any]]:
    """Every stored message of ``channel``, oldest first (pages of 200)."""
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    for _ in range(50):
        page = await client.history(channel, before=before, limit=200, timeout=WAIT)
        pages.append(page["messages"])
        if not page["more"] or not page["messages"]:
            break
        before = page["messages"][0]["id"]
    return [m for page in reversed(pages) for m in page]


def sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=parse_id)


def check_deltas_per_connection(client: E2EClient, reply: str, *, cut: bool = False) -> None:
    """In every connection, the reply's deltas are seq 0, 1, 2 … once each, in order, and
    where the connection saw the ``done`` they add up to its text (with ``cut``, a reply
    cancelled on its worker, to the start of it: the last piece may reach only the done)."""
    for index, frames in enumerate(client.connections()):
        deltas = [f for f in frames if f.get("type") == "delta" and f.get("reply") == reply]
        seqs = [int(d["seq"]) for d in deltas]
        assert seqs == list(range(len(seqs))), (
            f"{client.label} connection {index}: seqs of {reply} are {seqs}"
        )
        dones = [f for f in frames if f.get("type") == "done" and f.get("reply") == reply]
        assert len(dones) <= 1, f"{client.label} connection {index}: {len(dones)} dones"
        if dones and deltas:
            streamed, final = "".join(d["text"] for d in deltas), dones[0]["text"]
            assert final.startswith(streamed) if cut else streamed == final, (
                f"{client.label} connection {index}: deltas do not add up to the done"
            )


@dataclass
class Counts:
    """Messages sent vs. received in one fault test, reported to the lead."""

    name: str
    sent: int
    stored: int
    received: list[int]
    duplicates: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"FAULT {self.name}: sent={self.sent} stored={self.stored} "
            f"received per member={self.received} duplicates={self.duplicates}"
        )


def count_members(
    name: str,
    members: list[E2EClient],
    channel: str,
    stored: list[dict[str, Any]],
    sent: int,
    **extra: Any,
) -> Counts:
    """What each member received of ``channel`` (distinct stored ids) and how many came twice."""
    stored_ids = {str(m["id"]) for m in stored}
    received = [len(set(c.ids(channel)) & stored_ids) for c in members]
    duplicates = sum(len(c.ids(channel)) - len(set(c.ids(channel))) for c in members)
    return Counts(name, sent, len(stored), received, duplicates, dict(extra))


def report(counts: Counts) -> None:
    """Print the FAULT line and append it as JSON to test-output/fault-counts.jsonl."""
    line = counts.line()
    print(line)
    REPORTED.append(line)
    path = Path(FAULT_COUNTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "test": counts.name,
        "sent": counts.sent,
        "stored": counts.stored,
        "received_per_member": counts.received,
        "duplicates": counts.duplicates,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **counts.extra,
    }
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def assert_everyone_got_everything(
    members: list[E2EClient], channel: str, stored: list[dict[str, Any]]
) -> None:
    """Each member received each message of ``stored`` exactly once, and no other message of
    ``channel`` stored after the first of them."""
    stored_ids = sorted_ids(str(m["id"]) for m in stored)
    assert len(set(stored_ids)) == len(stored_ids), "the log itself holds an id twice"
    first = parse_id(stored_ids[0]) if stored_ids else (0, 0)
    for client in members:
        ids = [i for i in client.ids(channel) if parse_id(i) >= first]
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        assert not doubled, f"{client.label} received {doubled} more than once"
        assert sorted_ids(ids) == stored_ids, (
            f"{client.label}: missing {sorted(set(stored_ids) - set(ids))}, "
            f"unknown {sorted(set(ids) - set(stored_ids))}"
        )


async def wait_all_received(
    members: list[E2EClient], channel: str, stored: list[dict[str, Any]], timeout: float = WAIT
) -> None:
    """Wait until every member has every stored id of ``channel`` (duplicates checked later)."""
    wanted = {str(m["id"]) for m in stored}

    def done() -> bool:
        return all(wanted <= set(c.ids(channel)) for c in members)

    def missing() -> str:
        return "every member to receive every stored message; missing " + str(
            {c.label: sorted(wanted - set(c.ids(channel))) for c in members}
        )

    await wait_until(done, missing, timeout)


async def settle(members: list[E2EClient], quiet: float = 0.5, timeout: float = WAIT) -> None:
    """Wait until no member has received a frame for ``quiet`` s (late duplicates show up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        before = [len(c.raw) for c in members]
        await asyncio.sleep(quiet)
        if [len(c.raw) for c in members] == before:
            return
    raise AssertionError(f"frames kept coming for {timeout:g} s")


async def chatter(
    client: E2EClient, channel: str, count: int, interval: float, tag: str
) -> list[str]:
    """Send ``count`` messages, one per ``interval`` s, each until acknowledged; their ids."""
    ids = []
    for i in range(count):
        ids.append(await send_reliably(client, f"{tag} says {i}", channel, f"{tag}-{i}"))
        await asyncio.sleep(interval)
    return ids


async def join_all(members: list[E2EClient], room: str) -> None:
    """Every member joins ``room``; returns once each one's presence lists all of them."""
    for member in members:
        await member.join(room, timeout=WAIT)
    everyone = {m.user_id for m in members}
    await wait_until(
        lambda: all(m.presence(room) == everyone for m in members),
        f"presence of {room} to list all {len(everyone)} members on every worker",
    )


def max_seq(client: E2EClient, reply: str | None = None, channel: str | None = None) -> int:
    """The highest delta seq the client received (of one reply or channel), -1 before any."""
    seqs = [
        int(f["seq"])
        for f in client.raw
        if f.get("type") == "delta"
        and (reply is None or f.get("reply") == reply)
        and (channel is None or f.get("channel") == channel)
    ]
    return max(seqs, default=-1)


def reply_of(client: E2EClient, channel: str) -> str:
    """Id of the first reply the client saw streaming in ``channel``."""
    for frame in client.raw:
        if frame.get("type") == "delta" and frame.get("channel") == channel:
            return str(frame["reply"])
    raise AssertionError(f"{client.label} saw no reply in {channel}")
