"""Helpers of the browser suite: Debian's Chromium, a hub process, and a chat page driver.

Everything reaches into ``<hub-chat>``'s open shadow root through Playwright's locators
(CSS and test-id locators pierce open shadow roots) and its ``data-testid`` hooks, listed in
``frontend/README.md``. Every wait is a condition with an explicit bound; nothing sleeps.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Dialog, Locator, Page, ViewportSize, expect

from deploy.cluster import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium: the suite never downloads a browser (no ``playwright install``)."""

LAUNCH_ARGS = [
    "--no-sandbox",  # containers and CI runners as root have no user namespaces for it
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no update checks, safe browsing, metrics: closed network
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--no-proxy-server",  # the tests talk to 127.0.0.1 only, whatever the environment says
]

SCREENSHOTS = REPO_ROOT / "test-output" / "browser"

WAIT_MS = 20_000
"""Default bound of a wait for a condition, in ms (generous: two cores run the whole suite)."""

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

REPORTED: list[str] = []
"""Counts the tests print (sent vs shown), repeated in the terminal summary (see conftest)."""

SERVER_LOGS: list[Path] = []
"""Logs of the servers started for this run; a failed test prints their ends."""

MESSAGE_ID = re.compile(r"^\d+-\d+$")
"""A stored message's id (a Redis Stream id)."""

_STRIPPED_ENV = ("HUB_", "ANTHROPIC_", "OPENAI_")

# The messages on screen, in order, read from the element's shadow root.
MESSAGES_JS = """
() => {
  const root = document.querySelector("hub-chat").shadowRoot;
  return [...root.querySelectorAll('[data-testid="message"]')].map((li) => ({
    id: li.dataset.id || null,
    key: li.dataset.key || null,
    role: li.dataset.role || null,
    reply: li.dataset.reply || null,
    channel: li.dataset.channel || null,
    streaming: li.dataset.streaming === "true",
    text: (li.querySelector('[data-testid="message-content"]')?.textContent || "").trim(),
    note: li.querySelector(".note:not([hidden])")?.textContent || "",
  }));
}
"""

# At every hub-chat:state event (they bubble and are composed), records what the connection
# indicator shows: its data-state.
STATE_RECORDER_JS = """
window.__hubStates = [];
document.addEventListener("hub-chat:state", (e) => {
  const shown = e.target.shadowRoot?.querySelector('[data-testid="connection-state"]');
  window.__hubStates.push(shown ? shown.dataset.state : "(no indicator)");
});
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require_chromium() -> str:
    """The Chromium binary; skip without it, but fail in CI (deploy/test.sh installs it)."""
    if CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK):
        return str(CHROMIUM)
    reason = f"{CHROMIUM} not found; install Debian's chromium package (apt-get install chromium)"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the runner must install it)")
    pytest.skip(reason)


def hub_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the developer's HUB_* or API keys, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV)}
    env.update(extra)
    return env


def report(line: str) -> None:
    """Print a line of counts now and again in the run's summary."""
    print(line)
    REPORTED.append(line)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def words(count: int, tag: str) -> str:
    """``count`` distinct words; the echo assistant streams them one by one."""
    return " ".join(f"{tag}{i}" for i in range(count))


def echo_of(text: str) -> str:
    """The echo assistant's whole answer to ``text`` (mentions of @assistant removed)."""
    return "Echo: " + re.sub(r"@assistant\b", "", text).strip()


def normalized(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- a hub process


@dataclass
class HubProcess:
    """``python -m hub serve`` on a free port (HUB_PORT=0), its URL read from its first line."""

    process: subprocess.Popen[str]
    url: str
    log_path: Path
    reader: threading.Thread

    @classmethod
    def start(cls, env: Mapping[str, str], log_path: Path, timeout: float = 30.0) -> HubProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        SERVER_LOGS.append(log_path)
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "serve"],
                cwd=REPO_ROOT,
                env=hub_env({"HUB_PORT": "0", "HUB_HOST": "127.0.0.1", **env}),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def read_stdout() -> None:
            # The first line names the URL; the rest is read too, so the pipe never fills.
            for line in stdout:
                lines.put(line)

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            first = ""
        match = re.search(r"running at (http://\S+?)/?(\s|$)", first)
        if match is None:
            proc.kill()
            proc.wait(5)
            raise RuntimeError(
                f"hub did not start (first line {first!r}); log:\n{log_path.read_text()[-3000:]}"
            )
        return cls(proc, match.group(1), log_path, reader)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.reader.join(5)  # EOF once the hub has exited
        if self.process.stdout is not None and not self.reader.is_alive():
            self.process.stdout.close()


@contextmanager
def running_hub(env: Mapping[str, str], name: str) -> Iterator[str]:
    """A hub process for a module's tests, logging to browser-logs/<name>.log; yields its URL."""
    hub = HubProcess.start(env, SCREENSHOTS.parent / "browser-logs" / f"{name}.log")
    try:
        yield hub.url
    finally:
        hub.stop()


# --------------------------------------------------------------------------- a chat page


@dataclass
class ChatPage:
    """One user's tab with ``<hub-chat>``: actions and reads through its test hooks.

    It records what a test must be able to say never happened: dialogs (``alert``) and
    uncaught page errors; and, for a failure report, the console.
    """

    page: Page
    label: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.set_default_timeout(WAIT_MS)
        self.page.add_init_script(STATE_RECORDER_JS)
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self.page.on("console", self._on_console)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _on_console(self, msg: ConsoleMessage) -> None:
        self.console.append(f"[{msg.type}] {msg.text}")

    # ---- hooks

    def tid(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def messages(self) -> Locator:
        return self.tid("message")

    def by_role(self, role: str) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-role="{role}"]')

    def user_message(self, text: str) -> Locator:
        """User messages whose text is exactly ``text``."""
        return self.by_role("user").filter(
            has=self.page.get_by_test_id("message-content").get_by_text(text, exact=True)
        )

    def connection(self) -> Locator:
        return self.tid("connection-state")

    # ---- actions

    def goto(self, url: str) -> None:
        self.page.goto(url)
        expect(self.page.locator("hub-chat")).to_be_attached()

    def sign_in(self, name: str) -> None:
        expect(self.tid("signin-form")).to_be_visible()
        self.tid("signin-name").fill(name)
        self.tid("signin-submit").click()
        self.wait_open()
        expect(self.tid("me-name")).to_have_text(name)

    def wait_open(self) -> None:
        expect(self.connection()).to_have_attribute("data-state", "open")

    def reload(self) -> None:
        self.page.reload()
        self.wait_open()

    def send(self, text: str) -> None:
        """Type ``text`` into the composer and press Enter; it shows at once."""
        composer = self.tid("composer")
        composer.fill(text)
        composer.press("Enter")
        expect(composer).to_have_value("")

    def join(self, room: str) -> None:
        self.tid("room-input").fill(room)
        self.tid("room-join").click()
        expect(self.tid("channel-title")).to_have_text(f"#{room}")
        expect(self.page.locator(f'[data-testid="room-entry"][data-room="{room}"]')).to_be_visible()
        expect(self.tid("history-status")).to_be_hidden()

    # ---- reads

    def state(self) -> dict[str, Any]:
        """``element.state``: connection, worker, user, channel, rooms, unacked, lastIds."""
        value = self.page.evaluate("document.querySelector('hub-chat').state")
        assert isinstance(value, dict)
        return value

    def worker(self) -> str:
        worker = self.state()["worker"]
        assert isinstance(worker, str), f"{self.label}: no worker in {self.state()}"
        return worker

    def user_id(self) -> str:
        user = self.state()["user"]
        assert isinstance(user, dict)
        return str(user["id"])

    def snapshot(self) -> list[dict[str, Any]]:
        """Every message on screen, in order: id, key, role, reply, streaming, text, note."""
        value = self.page.evaluate(MESSAGES_JS)
        assert isinstance(value, list)
        return value

    def states(self) -> list[str]:
        """The indicator's data-state at each state event since the page loaded (or a reset)."""
        value = self.page.evaluate("window.__hubStates")
        assert isinstance(value, list)
        return [str(s) for s in value]

    def reset_states(self) -> None:
        self.page.evaluate("window.__hubStates = []")

    def wait_streaming(self, min_chars: int = 0, timeout: float = WAIT_MS) -> str:
        """Wait until an assistant reply streams with more than ``min_chars`` characters.

        Polls on every animation frame, so a reply of a few seconds is not missed. Returns
        its text at that moment.
        """
        handle = self.page.wait_for_function(
            """(minChars) => {
              const root = document.querySelector("hub-chat").shadowRoot;
              const li = root.querySelector(
                '[data-testid="message"][data-role="assistant"][data-streaming="true"]');
              if (!li) return false;
              const text = li.querySelector('[data-testid="message-content"]').textContent;
              return text.length > minChars ? text : false;
            }""",
            arg=min_chars,
            timeout=timeout,
        )
        value = handle.json_value()
        assert isinstance(value, str)
        return value

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_has_id(self, message: Locator) -> None:
        """The message is stored: it carries a log id (``<ms>-<seq>``)."""
        expect(message).to_have_attribute("data-id", MESSAGE_ID)

    def assert_clean(self) -> None:
        """No dialog opened and no uncaught error on the page."""
        assert not self.dialogs, f"{self.label}: dialogs opened: {self.dialogs}"
        assert not self.page_errors, f"{self.label}: uncaught page errors: {self.page_errors}"


OpenUser = Callable[..., ChatPage]
"""``open_user(label, color_scheme="light")``: a page in a browser context of its own."""


def signed_in(open_user: OpenUser, url: str, name: str) -> ChatPage:
    """A new user's page at ``url``, signed in as a guest called ``name``."""
    label = next(iter(re.findall(r"[a-z0-9]+", name.lower())), "user")  # "Ada Lovelace": ada
    chat = open_user(label)
    chat.goto(url)
    chat.sign_in(name)
    return chat
