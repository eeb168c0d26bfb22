"""The web client in Chromium against one hub process (memory broker, echo assistant).

Sign in, chat privately and watch the reply stream in, stop a reply, show hostile text as
text, the embedding example, and a reload (or a new tab) in the middle of a reply. Each test
saves a screenshot to test-output/browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.support import (
    MESSAGE_ID,
    ChatPage,
    OpenUser,
    echo_of,
    normalized,
    report,
    running_hub,
    signed_in,
    words,
)

pytestmark = pytest.mark.slow

HUB_ENV = {
    "HUB_SECRET": "browser-test-secret-0123456789abcdef0123",
    "HUB_LLM": "echo",
    "HUB_ECHO_DELAY": "0.05",  # one word per 50 ms: a reply visibly streams
    "HUB_RATE": "50",
    "HUB_RATE_BURST": "50",
    "HUB_GUEST_ROOMS": "*",  # the pages sign in as guests and open rooms of their own
}


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    """A hub on a free port; its URL, e.g. http://127.0.0.1:41234."""
    with running_hub(HUB_ENV, "hub-alone") as url:
        yield url


def test_private_chat_streams_reply(open_user: OpenUser, hub_url: str) -> None:
    chat = signed_in(open_user, hub_url, "Ada")

    # A fresh session is greeted in the private chat.
    expect(chat.tid("channel-title")).to_have_text("Assistant")
    greeting = chat.by_role("system")
    expect(greeting).to_have_count(1)
    expect(greeting).to_contain_text("Hi Ada!")

    text = "Hello assistant! Please repeat this sentence slowly, word by word, " + words(30, "word")
    chat.send(text)

    # Shown once, stored (an id from the ack) and not pending.
    mine = chat.user_message(text)
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-id", MESSAGE_ID)
    expect(mine).not_to_have_class(re.compile(r"\bpending\b"))

    # The reply streams: seen while data-streaming is true, and longer at a later read.
    first = chat.wait_streaming(min_chars=len("Echo: "))
    grown = chat.wait_streaming(min_chars=len(first))
    assert len(grown) > len(first) and grown.startswith(first.rstrip()), (first, grown)
    chat.screenshot("test_private_chat_streams_reply-streaming")

    reply = chat.by_role("assistant")
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply.get_by_test_id("message-content")).to_have_text(echo_of(text))
    expect(reply).to_have_attribute("data-id", MESSAGE_ID)
    expect(chat.tid("stop")).to_be_hidden()

    # Once each: the stored copy of the send and the reply's done added no duplicate.
    snap = chat.snapshot()
    assert [m["role"] for m in snap] == ["system", "user", "assistant"], snap
    assert len({m["id"] for m in snap}) == 3, snap
    report(f"PRIVATE: sent 1, shown user={chat.user_message(text).count()}, replies=1")
    chat.screenshot("test_private_chat_streams_reply")
    chat.assert_clean()


def test_stop_keeps_partial_reply(open_user: OpenUser, hub_url: str) -> None:
    chat = signed_in(open_user, hub_url, "Grace")
    text = words(160, "long")  # about 8 s of streaming: it is stopped long before the end
    full = echo_of(text)
    chat.send(text)

    chat.wait_streaming(min_chars=len("Echo: " + words(20, "long")))
    stop = chat.tid("stop")
    expect(stop).to_be_visible()
    stop.click()

    reply = chat.by_role("assistant")
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply).to_contain_text("Stopped")
    expect(stop).to_be_hidden()

    partial = normalized(reply.get_by_test_id("message-content").inner_text())
    assert partial.startswith("Echo: long0 long1 long2"), partial
    assert len(partial) < len(full) and full.startswith(partial), partial
    report(f"STOP: reply stopped after {len(partial.split()) - 1} of 160 words")
    chat.screenshot("test_stop_keeps_partial_reply")

    # The hub stored it that way: after a reload the history shows the same partial reply.
    reply_id = reply.get_attribute("data-id")
    chat.reload()
    stored = chat.page.locator(f'[data-testid="message"][data-id="{reply_id}"]')
    expect(stored).to_contain_text("Stopped")
    assert normalized(stored.get_by_test_id("message-content").inner_text()) == partial
    chat.assert_clean()


XSS = "<img src=x onerror=alert(1)> <script>window.__pwned=1</script>"


def test_markup_in_messages_is_text(open_user: OpenUser, hub_url: str) -> None:
    name = "🦊 Mallory <b>"  # markup and an emoji (two UTF-16 units) in the name too
    chat = signed_in(open_user, hub_url, name)
    chat.send(XSS)

    mine = chat.user_message(XSS)
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-id", MESSAGE_ID)
    reply = chat.by_role("assistant")
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply).to_have_attribute("data-id", MESSAGE_ID)

    # Both show the markup literally: the user's text as text, the echo as the server's
    # escaped html.
    expect(mine.get_by_test_id("message-content")).to_have_text(XSS)
    expect(reply.get_by_test_id("message-content")).to_have_text(echo_of(XSS))
    expect(chat.tid("me-name")).to_have_text(name)
    expect(chat.by_role("system")).to_contain_text(f"Hi {name}!")
    expect(chat.page.locator(".me .avatar")).to_have_text("🦊M")  # the emoji whole

    # No element came out of the text, nothing ran, no dialog opened.
    log = chat.tid("message-list")
    expect(log.locator("img")).to_have_count(0)
    expect(log.locator("script")).to_have_count(0)
    expect(log.locator("b")).to_have_count(0)
    assert chat.page.evaluate("typeof window.__pwned") == "undefined"
    chat.screenshot("test_markup_in_messages_is_text")
    chat.assert_clean()


def test_embed_example(open_user: OpenUser, hub_url: str) -> None:
    chat = open_user("embed")
    chat.goto(f"{hub_url}/examples/embed.html")
    expect(chat.page.get_by_role("heading", name="Your product page")).to_be_visible()
    widget = chat.page.locator(".widget hub-chat")
    expect(widget).to_be_visible()
    expect(chat.tid("signin-form")).to_be_visible()
    chat.screenshot("test_embed_example-signin", full_page=True)

    chat.sign_in("Linus")
    # The room attribute joins #lobby and opens it.
    expect(chat.tid("channel-title")).to_have_text("#lobby")
    expect(chat.page.locator('[data-testid="room-entry"][data-room="lobby"]')).to_be_attached()
    assert chat.state()["rooms"] == ["lobby"]

    text = "@assistant hello from the embedded chat"
    chat.send(text)
    expect(chat.user_message(text)).to_have_count(1)
    reply = chat.by_role("assistant")
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply.get_by_test_id("message-content")).to_have_text(echo_of(text))
    assert any("chat ready for" in line for line in chat.console), chat.console
    chat.screenshot("test_embed_example", full_page=True)
    chat.assert_clean()


def test_reload_mid_reply_keeps_place(open_user: OpenUser, hub_url: str) -> None:
    """Reloaded while a reply streams in a room: back in the room, the whole reply grows on.

    Nothing shows twice and the private chat gets no second greeting (the tab resumed).
    """
    chat = signed_in(open_user, hub_url, "Rhea")
    chat.join("reload")
    text = "@assistant " + words(160, "r")  # about 8 s of streaming
    chat.send(text)
    before = chat.wait_streaming(min_chars=len("Echo: " + words(5, "r")))

    chat.reload()
    expect(chat.tid("channel-title")).to_have_text("#reload")
    # From its first word, still streaming, and longer than before the reload.
    grown = normalized(chat.wait_streaming(min_chars=len(before)))
    assert grown.startswith("Echo: r0 r1 r2"), grown[:60]
    chat.screenshot("test_reload_mid_reply_keeps_place-streaming")

    reply = chat.by_role("assistant")
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply.get_by_test_id("message-content")).to_have_text(echo_of(text))
    expect(reply).to_have_count(1)
    expect(chat.user_message(text)).to_have_count(1)
    snap = chat.snapshot()
    assert [m["role"] for m in snap] == ["user", "assistant"], snap
    assert all(MESSAGE_ID.match(m["id"] or "") for m in snap), snap

    chat.tid("channel-open").click()
    expect(chat.tid("channel-title")).to_have_text("Assistant")
    expect(chat.by_role("system")).to_have_count(1)  # the first greeting only
    report(f"RELOAD: back in #reload, reply whole ({len(grown.split()) - 1} words at first sight)")
    chat.screenshot("test_reload_mid_reply_keeps_place")
    chat.assert_clean()


def test_new_tab_mid_reply_shows_whole_reply(open_user: OpenUser, hub_url: str) -> None:
    """A second tab of the same user, opened while a reply streams, shows it from its start.

    The tab has no saved place: a fresh session, which the hub sends the streamed part first.
    """
    chat = signed_in(open_user, hub_url, "Tess")
    chat.join("tabs")
    text = "@assistant " + words(160, "t")
    chat.send(text)
    chat.wait_streaming(min_chars=len("Echo: " + words(5, "t")))

    # Same browser context: the same guest, but a tab of its own (no saved place, no resume).
    second = ChatPage(chat.page.context.new_page(), "tess-2")
    second.goto(hub_url)
    second.wait_open()
    second.page.locator(
        '[data-testid="room-entry"][data-room="tabs"] [data-testid="room-open"]'
    ).click()
    expect(second.tid("channel-title")).to_have_text("#tabs")
    seen = normalized(second.wait_streaming())
    assert seen.startswith("Echo: t0 t1 t2"), seen[:60]
    reply = second.by_role("assistant")
    expect(reply).to_have_attribute("data-streaming", "false")
    expect(reply).to_have_count(1)
    expect(reply.get_by_test_id("message-content")).to_have_text(echo_of(text))
    second.assert_clean()
