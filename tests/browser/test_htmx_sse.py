"""Clients nobody here wrote, in Chromium, from another origin than the hub's.

- The stock htmx 2 + htmx-ext-sse "streaming chat bubble" page (frontend/examples/htmx.html).
- A native ``EventSource`` through a ticket, behind nginx, while the worker serving it is
  killed (SIGKILL) mid-reply: the page, which shows every event as it comes with no
  deduplication of its own, ends with no piece repeated and none missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from deploy.cluster import REPO_ROOT, Cluster
from hub.auth import mint_token
from tests.browser.host_page import HostSite
from tests.browser.support import (
    SCREENSHOTS,
    SERVER_LOGS,
    HubProcess,
    OpenUser,
    echo_of,
    report,
    words,
)
from tests.deploy.binaries import require_binary

pytestmark = pytest.mark.slow

SECRET = "browser-test-secret-0123456789abcdef0123"
HTMX_PAGE = REPO_ROOT / "frontend" / "examples" / "htmx.html"
EVENTSOURCE_PAGE = Path(__file__).with_name("eventsource_page.html")


@pytest.fixture(scope="module")
def site() -> Iterator[HostSite]:
    host = HostSite()
    try:
        yield host
    finally:
        host.close()


def page_for(template: Path, hub_url: str, token: str) -> str:
    """What a host's backend does: fill in the hub's URL and a token it minted."""
    return template.read_text().replace("{{hub_url}}", hub_url).replace("{{token}}", token)


def errors_of(page: Page) -> list[str]:
    """Console errors and uncaught exceptions, recorded from now on."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: seen.append(str(exc)))
    return seen


def test_htmx_page_streams_a_reply_bubble(open_user: OpenUser, site: HostSite) -> None:
    env = {
        "HUB_SECRET": SECRET,
        "HUB_LLM": "echo",
        "HUB_ECHO_DELAY": "0.05",
        "HUB_ALLOWED_ORIGINS": site.origin,
    }
    hub = HubProcess.start(env, SCREENSHOTS.parent / "browser-logs" / "hub-htmx.log")
    try:
        token = mint_token(SECRET, "ada", "Ada", 3600)
        site.pages["/chat"] = page_for(HTMX_PAGE, hub.url, token)
        page = open_user("htmx").page
        errors = errors_of(page)
        page.goto(f"{site.origin}/chat")
        text = "Tell me <b>everything</b> & " + words(40, "w")
        page.get_by_label("Your message").fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.user .text")).to_have_text(text)  # markup shown as text
        expect(page.get_by_label("Your message")).to_have_value("")  # ready for the next one
        streaming = page.locator('.bubble.assistant[aria-busy="true"] .text span')
        expect(streaming.nth(3)).to_be_attached()  # pieces arrive one by one
        finished = page.locator('.bubble.assistant[id^="m-"] .text')
        expect(finished).to_have_text(echo_of(text))
        expect(page.locator(".bubble.assistant")).to_have_count(1)
        assert page.locator(".bubble b").count() == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "test_htmx_page_streams_a_reply_bubble.png"))
        assert errors == [], errors
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def cluster(site: HostSite) -> Iterator[Cluster]:
    """redis-server, three workers and nginx; the host site's origin is allowed."""
    require_binary("nginx")
    require_binary("redis-server")
    run_dir = SCREENSHOTS.parent / "browser-logs" / "eventsource"
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {
        "HUB_LLM": "echo",
        "HUB_ECHO_DELAY": "0.05",
        "HUB_ALLOWED_ORIGINS": site.origin,
        "HUB_DRAIN_TIMEOUT": "5",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("HUB_", "ANTHROPIC_", "OPENAI_")):
                patch.delenv(key)
        cluster = Cluster(3, env=env, run_dir=run_dir, start_timeout=30)
    SERVER_LOGS.extend(cluster.log_dir / f"{w.worker_id}.log" for w in cluster.workers)
    SERVER_LOGS.append(cluster.log_dir / "nginx.log")
    with cluster:
        yield cluster


def test_native_eventsource_survives_its_worker_killed(
    open_user: OpenUser, site: HostSite, cluster: Cluster
) -> None:
    token = mint_token(cluster.secret, "eve", "Eve", 3600)
    site.pages["/events"] = page_for(EVENTSOURCE_PAGE, cluster.url, token)
    page = open_user("eventsource").page
    errors = errors_of(page)
    page.goto(f"{site.origin}/events")
    page.wait_for_function("() => window.hubLog.workers.length === 1")
    victim = page.evaluate("() => window.hubLog.workers[0]")
    index = next(w.index for w in cluster.workers if w.worker_id == victim)
    other = cluster.workers[(index + 1) % len(cluster.workers)]

    # The reply runs on another worker than the one serving the page's stream.
    text = words(120, "part")
    answer: dict[str, object] = {}

    def ask() -> None:
        request = urllib.request.Request(
            f"{other.url}/api/chat",
            data=json.dumps({"text": text}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer.update(json.loads(resp.read()))

    asker = threading.Thread(target=ask)
    asker.start()
    page.wait_for_function("() => window.hubLog.deltas >= 15")
    assert cluster.kill_worker(index) == -9
    page.wait_for_function("() => window.hubLog.dones.length === 1", timeout=60_000)
    asker.join(60)
    log = page.evaluate("() => window.hubLog")
    report(
        f"EVENTSOURCE: stream on {victim} killed mid-reply; "
        f"reopened on {log['workers'][1:]} ({log['tickets']} tickets); {log['deltas']} deltas"
    )
    assert len(log["workers"]) >= 2 and victim not in log["workers"][1:], log["workers"]
    done = log["dones"][0]
    assert done["text"] == echo_of(text) == answer["text"]
    assert log["streamed"][done["reply"]] == done["text"]  # no piece twice, none missing
    ids = [m["id"] for m in log["messages"]]
    assert len(ids) == len(set(ids)), ids
    assert [m["text"] for m in log["messages"] if m["role"] == "user"] == [text]
    shown = page.locator(f'[data-reply="{done["reply"]}"]')
    expect(shown).to_have_text(echo_of(text))
    assert [e for e in errors if "401" not in e and "ERR_" not in e] == [], errors
