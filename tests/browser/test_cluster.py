"""The web client in Chromium through nginx, against three hub workers sharing Redis.

Two users in two browser contexts, placed on different workers, share a room; then one
user's worker is killed (SIGKILL) in the middle of a streamed reply, and that page must
reconnect to another worker and end up with every message exactly once and the reply whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from deploy.cluster import Cluster
from tests.browser.support import (
    SCREENSHOTS,
    SERVER_LOGS,
    ChatPage,
    OpenUser,
    echo_of,
    normalized,
    report,
    signed_in,
    words,
)
from tests.deploy.binaries import require_binary

pytestmark = pytest.mark.slow

CLUSTER_ENV = {
    "HUB_LLM": "echo",
    "HUB_ECHO_DELAY": "0.05",  # one word per 50 ms: a 120-word reply streams for about 6 s
    "HUB_RATE": "50",
    "HUB_RATE_BURST": "50",
    "HUB_GUEST_ROOMS": "*",  # the pages sign in as guests and open rooms of their own
    "HUB_DRAIN_TIMEOUT": "5",
}

PLACEMENT_TRIES = 15


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """redis-server, three workers and nginx, shared by this module's tests.

    The kill test leaves one worker dead; the room test needs only two live ones and nginx
    passes over a dead worker, so the order of the tests does not matter.
    """
    require_binary("nginx")
    require_binary("redis-server")
    run_dir = SCREENSHOTS.parent / "browser-logs" / "cluster"
    shutil.rmtree(run_dir, ignore_errors=True)
    with pytest.MonkeyPatch.context() as env:
        # The workers inherit this process's environment: not the developer's HUB_* or keys.
        for key in list(os.environ):
            if key.startswith(("HUB_", "ANTHROPIC_", "OPENAI_")):
                env.delenv(key)
        cluster = Cluster(3, env=CLUSTER_ENV, run_dir=run_dir, start_timeout=30)
    SERVER_LOGS.extend(cluster.log_dir / f"{w.worker_id}.log" for w in cluster.workers)
    SERVER_LOGS.append(cluster.log_dir / "nginx.log")
    with cluster:
        yield cluster


def place_apart(fixed: ChatPage, moving: ChatPage) -> int:
    """Reload ``moving`` until its WebSocket lands on another worker than ``fixed``'s.

    nginx balances round robin over every request; one extra request before each reload
    shifts the rotation, so the page's next WebSocket goes to another worker. Returns the
    number of reloads it took.
    """
    for reloads in range(PLACEMENT_TRIES):
        if moving.worker() != fixed.worker():
            return reloads
        moving.page.evaluate("() => fetch('/health').then((r) => r.status)")
        moving.reload()
    pytest.fail(f"{moving.label} stayed on {fixed.worker()} after {PLACEMENT_TRIES} reloads")


def say(author: ChatPage, text: str, everyone: list[ChatPage]) -> None:
    """``author`` sends ``text``; every page shows it once, stored."""
    author.send(text)
    for chat in everyone:
        message = chat.user_message(text)
        expect(message).to_have_count(1)
        chat.assert_has_id(message)


def expect_reply(chat: ChatPage, text: str) -> None:
    """The page shows one assistant reply, finished, with exactly ``text``."""
    reply = chat.by_role("assistant")
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-streaming", "false")
    chat.assert_has_id(reply)
    expect(reply.get_by_test_id("message-content")).to_have_text(text)


def test_room_shared_across_workers(open_user: OpenUser, cluster: Cluster) -> None:
    ada = signed_in(open_user, cluster.url, "Ada Lovelace")
    bob = signed_in(open_user, cluster.url, "Bob Kahn")
    reloads = place_apart(ada, bob)
    report(f"ROOM: Ada on {ada.worker()}, Bob on {bob.worker()} ({reloads} reloads)")

    everyone = [ada, bob]
    for chat in everyone:
        chat.join("team")
    for chat in everyone:  # presence crosses workers too
        expect(chat.tid("presence-member")).to_have_count(2)

    say(ada, "Morning, Bob! Ready to go over Friday's release?", everyone)
    say(bob, "Yes! The migration is done and the docs are in review.", everyone)

    ask = (
        "@assistant recap for the team: the migration is **done**, the docs are in review "
        "with Carol, the load test passed at 2,000 users, and we ship on Friday after one "
        "last smoke test. Anything we forgot?"
    )
    ada.send(ask)
    # Both watch the same reply stream in, then end with the whole text.
    for chat in everyone:
        chat.wait_streaming(min_chars=len("Echo: recap"))
    for chat in everyone:
        expect_reply(chat, echo_of(ask).replace("**", ""))
        expect(chat.by_role("assistant").locator("strong")).to_have_text("done")

    ids = {chat.label: [m["id"] for m in chat.snapshot()] for chat in everyone}
    assert ids["ada"] == ids["bob"], ids
    assert len(set(ids["ada"])) == len(ids["ada"]) == 4, ids
    report(f"ROOM: sent 3 + 1 reply; Ada shows {len(ids['ada'])}, Bob shows {len(ids['bob'])}")
    ada.screenshot("test_room_shared_across_workers")
    bob.screenshot("test_room_shared_across_workers-bob")
    for chat in everyone:
        chat.assert_clean()


def test_worker_killed_mid_reply(open_user: OpenUser, cluster: Cluster) -> None:
    cleo = signed_in(open_user, cluster.url, "Cleo")
    dan = signed_in(open_user, cluster.url, "Dan")
    reloads = place_apart(cleo, dan)
    victim = dan.worker()
    index = next(w.index for w in cluster.workers if w.worker_id == victim)
    report(f"FAILOVER: Cleo on {cleo.worker()}, Dan on {victim} ({reloads} reloads; to be killed)")

    everyone = [cleo, dan]
    room = "team-failover"
    for chat in everyone:
        chat.join(room)
    sent: list[str] = []

    def said(author: ChatPage, text: str) -> None:
        say(author, text, everyone)
        sent.append(text)

    said(cleo, "Before the crash: hello from Cleo")
    said(dan, "Hi Cleo, Dan here")

    ask = "@assistant " + words(120, "part")
    cleo.send(ask)
    sent.append(ask)
    dan.wait_streaming(min_chars=len(echo_of(words(15, "part"))))
    for chat in everyone:
        chat.reset_states()

    assert cluster.kill_worker(index) == -9
    # Typed while the page finds out: kept until acked, sent again after the reconnect.
    during = "Sent while my worker was down"
    dan.send(during)
    sent.append(during)

    dan.page.wait_for_function(
        """(dead) => {
          const s = document.querySelector("hub-chat").state;
          return s.connection === "open" && s.worker && s.worker !== dead;
        }""",
        arg=victim,
    )
    states = dan.states()
    assert "reconnecting" in states, states
    assert states[-1] == "open" and states.index("open") > states.index("reconnecting"), states
    expect(dan.connection()).to_have_attribute("data-state", "open")
    report(f"FAILOVER: Dan went {' -> '.join(states)}, now on {dan.worker()}")
    dan.screenshot("test_worker_killed_mid_reply-reconnected")

    for chat in everyone:
        expect_reply(chat, echo_of(ask))
        expect(chat.user_message(during)).to_have_count(1)
        chat.assert_has_id(chat.user_message(during))

    said(cleo, "After the crash: still with us, Dan?")
    said(dan, "Yes, on another worker now.")

    # Every message exactly once on both pages, in the same order; the reply whole.
    ids: dict[str, list[str]] = {}
    for chat in everyone:
        snap = chat.snapshot()
        shown = [m["id"] for m in snap]
        assert None not in shown, snap
        assert len(shown) == len(set(shown)), f"{chat.label}: duplicate ids {shown}"
        users = [m["text"] for m in snap if m["role"] == "user"]
        assert sorted(users) == sorted(sent), (users, sent)
        replies = [m for m in snap if m["role"] == "assistant"]
        assert len(replies) == 1 and normalized(replies[0]["text"]) == echo_of(ask), replies
        ids[chat.label] = shown
        report(
            f"FAILOVER: {chat.label}: sent {len(sent)} messages + 1 reply, shows "
            f"{len(users)} messages + {len(replies)} reply ({len(shown)} ids, all distinct)"
        )
    assert ids["cleo"] == ids["dan"], ids
    assert cleo.states() == [], "Cleo's worker lived: her page never left open"

    dan.screenshot("test_worker_killed_mid_reply")
    cleo.screenshot("test_worker_killed_mid_reply-cleo")
    for chat in everyone:
        chat.assert_clean()
