"""The web client in a room of a few hundred people (one hub, memory broker).

A crowd of plain aiohttp WebSocket clients joins one room; a person in Chromium then sees the
count, the first page of who is online, the next pages on demand, and diffs: a member who
leaves disappears and the count drops, a newcomer appears in place, the other rows stay as
they were. Then a benchmark of the client alone at 10,000 members: presence frames handed to
it as its connection would, timed in the page, the list on screen checked against its model.
Saves screenshots to test-output/browser/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.crowd import Crowd
from tests.browser.support import ChatPage, OpenUser, report, running_hub, signed_in

pytestmark = pytest.mark.slow

SECRET = "browser-test-secret-0123456789abcdef0123"
HUB_ENV = {
    "HUB_SECRET": SECRET,
    "HUB_LLM": "echo",
    "HUB_GUEST_ROOMS": "*",  # the pages sign in as guests and open rooms of their own
    "HUB_MAX_CONNECTIONS_PER_IP": "1000",  # the whole crowd comes from 127.0.0.1
}
ROOM = "crowd"
CROWD = 300
FIRST_PAGE = 100  # the snapshot's page (protocol v2)

# The user ids of the member rows, in order on screen.
SHOWN_JS = """
() => [...document.querySelector("hub-chat").shadowRoot
  .querySelectorAll('[data-testid="presence-member"]')].map((li) => li.dataset.userId)
"""
# Marks every member row now on screen, to tell later which rows were drawn anew.
MARK_JS = """
() => document.querySelector("hub-chat").shadowRoot
  .querySelectorAll('[data-testid="presence-member"]').forEach((li) => { li.__kept = true; })
"""
REDRAWN_JS = """
() => [...document.querySelector("hub-chat").shadowRoot
  .querySelectorAll('[data-testid="presence-member"]')].filter((li) => !li.__kept)
  .map((li) => li.dataset.userId)
"""


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    with running_hub(HUB_ENV, "big-room") as url:
        yield url


def shown(chat: ChatPage) -> list[str]:
    value = chat.page.evaluate(SHOWN_JS)
    assert isinstance(value, list)
    return [str(v) for v in value]


def expect_online(chat: ChatPage, count: int) -> None:
    """The sidebar's heading and the room's header both say ``count`` people are online."""
    expect(chat.tid("presence-count")).to_have_text(f"Online in #{ROOM} — {count:,}")
    expect(chat.page.locator(".topbar .subtitle")).to_have_text(f"{count:,} online")


def test_big_room_count_pages_and_diffs(open_user: OpenUser, hub_url: str) -> None:
    started = time.monotonic()
    with Crowd(hub_url, SECRET, ROOM, CROWD) as crowd:
        filled = time.monotonic() - started
        crowd_ids = [Crowd.user(i)[0] for i in range(CROWD)]
        zoe = signed_in(open_user, hub_url, "Zoe")  # sorts after every "Member …"
        zoe.join(ROOM)
        me = zoe.user_id()

        # The snapshot: everyone counted, the first page shown in order (name, then id).
        expect_online(zoe, CROWD + 1)
        rows = zoe.tid("presence-member")
        expect(rows).to_have_count(FIRST_PAGE)
        assert shown(zoe) == crowd_ids[:FIRST_PAGE]
        more = zoe.tid("presence-more")
        expect(more).to_be_visible()
        zoe.screenshot("test_big_room-first-page")

        # The button brings the next page (clicked where it is: once in view it loads by itself);
        # scrolled to the end of the list, the last page comes by itself.
        expect(more).to_have_text(f"Show more ({CROWD + 1 - FIRST_PAGE} more online)")
        more.dispatch_event("click")
        expect(rows).to_have_count(CROWD)
        expect(more).to_have_text("Show more (1 more online)")
        zoe.page.locator(".members-scroll").evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
        expect(rows).to_have_count(CROWD + 1)
        expect(more).to_be_hidden()
        assert shown(zoe) == [*crowd_ids, me]
        expect(
            zoe.page.locator(f'[data-testid="presence-member"][data-user-id="{me}"]')
        ).to_contain_text("(you)")

        # Diffs: a member leaves (row gone, count down), a newcomer comes in at the top.
        zoe.page.evaluate(MARK_JS)
        t0 = time.monotonic()
        crowd.leave("m050")
        expect(
            zoe.page.locator('[data-testid="presence-member"][data-user-id="m050"]')
        ).to_have_count(0)
        expect_online(zoe, CROWD)
        gone_after = time.monotonic() - t0
        crowd.join("a-first", "Aaron")
        expect(rows.first).to_have_attribute("data-user-id", "a-first")
        expect_online(zoe, CROWD + 1)
        assert shown(zoe) == ["a-first", *crowd_ids[:50], *crowd_ids[51:], me]
        # Only the newcomer's row was drawn: the diffs did not redraw the list.
        assert zoe.page.evaluate(REDRAWN_JS) == ["a-first"]
        zoe.page.locator(".members-scroll").evaluate("(el) => { el.scrollTop = 0; }")
        zoe.screenshot("test_big_room")
        zoe.assert_clean()
    report(
        f"BIG ROOM: {CROWD} joined in {filled:.1f} s; Zoe paged {CROWD + 1} rows in 3 pages; "
        f"a leave reached her screen in {gone_after:.1f} s"
    )


# Hands the client frames as its connection would (its "frame" event). JOINED_JS: a room the
# hub knows nothing of, so no real frame ever comes for it. SCALE_JS: a snapshot of `total`
# members (all of them, or the first page of 100), then `diffs` presence diffs of `per` joins
# and `per` leaves each. Returns the times (ms, each up to the next frame drawn) and what the
# page then shows.
JOINED_JS = """
(room) => document.querySelector("hub-chat").client.conn.dispatchEvent(new CustomEvent("frame",
  { detail: { frame: { type: "joined", room, online: 0, members: [], more: false, history: [] } } }))
"""
SCALE_JS = """
async ({ room, total, diffs, per, all }) => {
  const el = document.querySelector("hub-chat");
  const deliver = (frame) => el.client.conn.dispatchEvent(new CustomEvent("frame", { detail: { frame } }));
  const painted = () => new Promise((done) => requestAnimationFrame(() => setTimeout(done)));
  let seed = 12345;
  // A fixed sequence (an LCG; its high bits, the low ones cycle short).
  const random = (n) => Math.floor((seed = (seed * 1103515245 + 12345) % 2147483648) / 65536) % n;
  const member = (i, n) => ({ id: `s${i}`, name: `Synthetic ${String(n).padStart(5, "0")}` });
  const first = Array.from({ length: total }, (_, i) => member(i, i));
  // The diffs, made up front so only their handling is timed.
  const online = first.map((m) => m.id);
  const frames = [];
  for (let d = 0, next = total; d < diffs; d++) {
    const leaves = [];
    for (let k = 0; k < per; k++) {
      const at = random(online.length);
      leaves.push(online[at]);
      online[at] = online[online.length - 1];
      online.pop();
    }
    const joins = Array.from({ length: per }, () => member(next++, random(total)));
    online.push(...joins.map((m) => m.id));
    frames.push({ type: "presence", room, online: online.length, joins, leaves });
  }
  let t0 = performance.now();
  deliver({ type: "presence", room, online: total, members: all ? first : first.slice(0, 100), more: !all });
  await painted();
  const snapshotMs = performance.now() - t0;
  t0 = performance.now();
  for (const frame of frames) deliver(frame);
  await painted();
  const diffsMs = performance.now() - t0;
  const now = new Set(online);
  const roster = el.client.store.channel(`room:${room}`).roster;
  const rows = [...el.shadowRoot.querySelectorAll('[data-testid="presence-member"]')].map((li) => li.dataset.userId);
  const held = roster.members.map((m) => m.id);
  return { snapshotMs, diffsMs, rows, roster: roster.members.map((m) => m.id), online: roster.online,
           expected: now.size, everyoneOnline: held.every((id) => now.has(id)), wholeList: held.length === now.size };
}
"""


@pytest.mark.parametrize("loaded", ["first-page", "all"])
def test_ten_thousand_members_benchmark(open_user: OpenUser, hub_url: str, loaded: str) -> None:
    """1,000 diffs (10 joins and 10 leaves each) on a room of 10,000: timed, and checked."""
    chat = signed_in(open_user, hub_url, "Bench")
    room = f"scale-{loaded}"
    chat.page.evaluate(JOINED_JS, room)
    chat.page.locator(
        f'[data-testid="room-entry"][data-room="{room}"] [data-testid="room-open"]'
    ).click()
    expect(chat.tid("channel-title")).to_have_text(f"#{room}")
    args = {"room": room, "total": 10_000, "diffs": 1_000, "per": 10, "all": loaded == "all"}
    result = chat.page.evaluate(SCALE_JS, args)
    # The rows on screen are the client's list, in its order; everyone in it is online.
    assert result["rows"] == result["roster"]
    assert result["online"] == result["expected"]
    assert result["everyoneOnline"]
    if loaded == "all":
        assert result["wholeList"], "every member online is listed"
    expect(chat.tid("presence-count")).to_have_text(f"Online in #{room} — {result['expected']:,}")
    chat.screenshot(f"test_ten_thousand_members_benchmark-{loaded}")
    chat.assert_clean()
    report(
        f"10K ROOM ({loaded}): snapshot drawn in {result['snapshotMs']:.0f} ms; 1,000 diffs of "
        f"20 changes in {result['diffsMs']:.0f} ms ({result['diffsMs'] / 1000:.2f} ms each); "
        f"{len(result['rows']):,} rows on screen"
    )
