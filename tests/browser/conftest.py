"""Fixtures of the browser suite: one Chromium per module, a fresh context per user.

The tests use Playwright's sync API, so they and these fixtures are plain functions: the
sync API refuses to run inside an event loop (pytest runs with asyncio_mode=auto, which
leaves plain ``def`` tests alone).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from tests.browser.support import (
    LAUNCH_ARGS,
    REPORTED,
    SERVER_LOGS,
    VIEWPORT,
    WAIT_MS,
    ChatPage,
    OpenUser,
    log_tail,
    require_chromium,
)

expect.set_options(timeout=WAIT_MS)

PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report, so a fixture can tell that its test failed."""
    report = yield
    item.stash.setdefault(PHASES, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat the counts of the browser tests (sent vs shown per page) at the end of the run."""
    if REPORTED:
        terminalreporter.section("browser tests: messages sent vs shown")
        for line in REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, shared by the tests of a module."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_user(browser: Browser, request: pytest.FixtureRequest) -> Iterator[OpenUser]:
    """``open_user(label)``: a new browser context (own storage, so own guest) with one page.

    A failed test leaves a screenshot of every page (``<test>-failed-<label>.png``) and
    prints each page's console.
    """
    contexts: list[BrowserContext] = []
    pages: list[ChatPage] = []

    def open_page(label: str, color_scheme: str = "light") -> ChatPage:
        context = browser.new_context(
            viewport=VIEWPORT,
            color_scheme="dark" if color_scheme == "dark" else "light",
            locale="en-US",
            timezone_id="UTC",
        )
        contexts.append(context)
        chat = ChatPage(context.new_page(), label)
        pages.append(chat)
        return chat

    yield open_page

    reports = request.node.stash.get(PHASES, {})
    failed = any(r.failed for r in reports.values())
    for chat in pages:
        if failed:
            try:
                path = chat.screenshot(f"{request.node.name}-failed-{chat.label}")
                print(f"{chat.label}: screenshot {path}")
            except Exception as exc:  # a crashed page cannot be photographed
                print(f"{chat.label}: no screenshot ({exc})")
            print(f"--- console of {chat.label}:")
            for line in chat.console[-60:]:
                print(line)
    if failed:
        for log in SERVER_LOGS:
            print(f"--- end of {log}:\n{log_tail(log)}")
    for context in contexts:
        context.close()
