"""Small parts on their own: outbound queues, markdown safety, settings, tokens, the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable

import pytest

from hub.auth import AuthError, mint_token, verify_token
from hub.broker.base import Envelope, Kind
from hub.core.connection import Connection, write_eagerly
from hub.protocol import User
from hub.render import render_markdown
from hub.settings import SettingsError, load_settings
from tests.conftest import HubFactory
from tests.support.wsclient import Closed


def frame(payload: str) -> Envelope:
    """A channel frame as the fan-out hands it to a connection."""
    return Envelope(Kind.MESSAGE, payload)


class _StuckSink:
    """A peer that never reads: every send waits forever."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None

    async def send(self, payload: str) -> None:
        self.sent.append(payload)
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_a_slow_reader_overflows_its_queue_and_is_closed_4008() -> None:
    sink = _StuckSink()
    conn = Connection(User(id="slow", name="Slow"), sink, max_queue=8)
    conn.start()
    conn.release()
    conn.deliver("dm:slow", frame('{"n":0}'))
    await asyncio.sleep(0.01)  # the writer takes frame 0 and gets stuck on the peer
    for i in range(1, 50):
        conn.deliver("dm:slow", frame(f'{{"n":{i}}}'))  # never blocks the sender
    await conn.wait_closed(2)
    assert conn.closed
    assert sink.closed_with is not None and sink.closed_with[0] == 4008
    assert sink.sent == ['{"n":0}']


async def test_frames_are_written_in_order_by_one_writer() -> None:
    class Sink:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.closed_with: tuple[int, str] | None = None

        async def send(self, payload: str) -> None:
            await asyncio.sleep(0)
            self.sent.append(payload)

        async def close(self, code: int, reason: str) -> None:
            self.closed_with = (code, reason)

    sink = Sink()
    conn = Connection(User(id="a", name="A"), sink, max_queue=100)
    conn.start()
    conn.deliver("dm:a", frame("held"))
    conn.send_now("first")
    for payload in conn.release():
        conn.send_now(payload[1].payload)
    conn.close(1000, "bye")
    await conn.wait_closed(2)
    assert sink.sent == ["first", "held"]
    assert sink.closed_with == (1000, "bye")


class _GateSink:
    """A peer whose transport accepts frames at once until the gate closes (backpressure)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed_with: tuple[int, str] | None = None

    async def send(self, payload: str) -> None:
        self.sent.append(payload)
        await self.gate.wait()

    def write_now(self, payload: str) -> Awaitable[None] | None:
        return write_eagerly(self.send(payload))

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_a_frame_to_a_peer_that_keeps_up_is_written_before_deliver_returns() -> None:
    sink = _GateSink()
    conn = Connection(User(id="a", name="A"), sink, max_queue=8)
    conn.start()
    conn.release()
    conn.deliver("dm:a", frame("one"))
    conn.send_now("two")
    assert sink.sent == ["one", "two"]  # no task had to run
    conn.close(1000, "bye")
    await conn.wait_closed(2)
    assert sink.closed_with == (1000, "bye")


async def test_frames_wait_while_the_transport_pushes_back_then_go_in_order() -> None:
    sink = _GateSink()
    conn = Connection(User(id="a", name="A"), sink, max_queue=8)
    conn.start()
    conn.release()
    sink.gate.clear()
    conn.send_now("one")  # written, then the transport pushes back
    conn.send_now("two")
    conn.send_now("three")
    conn.close(1000, "bye")
    await asyncio.sleep(0.01)
    assert sink.sent == ["one"] and conn.queued_bytes == len("onetwothree")
    assert sink.closed_with is None  # the close waits for the frames before it
    sink.gate.set()
    await conn.wait_closed(2)
    assert sink.sent == ["one", "two", "three"]
    assert sink.closed_with == (1000, "bye") and conn.queued_bytes == 0


async def test_after_backpressure_ends_frames_are_written_directly_again() -> None:
    sink = _GateSink()
    conn = Connection(User(id="a", name="A"), sink, max_queue=8)
    conn.start()
    conn.release()
    sink.gate.clear()
    conn.send_now("one")
    conn.send_now("two")
    sink.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sink.sent == ["one", "two"] and conn.queued_bytes == 0
    conn.send_now("three")
    assert sink.sent == ["one", "two", "three"]


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[click](javascript:alert(1))",
        "[click](JAVASCRIPT:alert(1))",
        "[click](  javascript:alert(1))",
        "![x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox(1))",
    ],
)
def test_assistant_markdown_never_yields_live_html(markdown: str) -> None:
    html = render_markdown(markdown).lower()
    assert "<script" not in html
    assert "<img" not in html
    assert 'href="javascript' not in html
    assert "vbscript:" not in html or "href" not in html


def test_assistant_markdown_keeps_code_and_safe_links() -> None:
    html = render_markdown(
        "Use `x`:\n\n```python\nprint('<b>')\n```\n\n[docs](https://example.com)"
    )
    assert "<pre><code class=\"language-python\">print('&lt;b&gt;')" in html
    assert '<a href="https://example.com">docs</a>' in html


def test_a_bad_setting_names_the_variable_and_the_problem() -> None:
    os.environ["HUB_PORT"] = "eighty"
    try:
        with pytest.raises(SettingsError) as info:
            load_settings()
    finally:
        del os.environ["HUB_PORT"]
    assert "HUB_PORT" in str(info.value)
    with pytest.raises(SettingsError) as info:
        load_settings(broker_url="mysql://x")
    assert "HUB_BROKER_URL" in str(info.value)


def test_llm_defaults_to_anthropic_only_with_a_key() -> None:
    assert load_settings().llm_name == "echo"
    os.environ["ANTHROPIC_API_KEY"] = "sk-test"
    try:
        assert load_settings().llm_name == "anthropic"
    finally:
        del os.environ["ANTHROPIC_API_KEY"]


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = mint_token("s" * 32, "ann", "Ann", 60)
    user = verify_token("s" * 32, token)
    assert (user.id, user.name, user.guest, user.rooms) == ("ann", "Ann", False, None)
    with pytest.raises(AuthError):
        verify_token("t" * 32, token)
    with pytest.raises(AuthError, match="expired"):
        verify_token("s" * 32, mint_token("s" * 32, "ann", "Ann", -5))
    with pytest.raises(ValueError):
        mint_token("s" * 32, "bad id!", "Ann", 60)


def test_hub_token_command_mints_a_token_for_the_secret() -> None:
    env = {**os.environ, "HUB_SECRET": "cli-secret-cli-secret-cli-secret"}
    out = subprocess.run(
        [sys.executable, "-m", "hub", "token", "--user", "ann", "--name", "Ann"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert verify_token("cli-secret-cli-secret-cli-secret", out.stdout.strip()).id == "ann"
    bad = subprocess.run(
        [sys.executable, "-m", "hub", "token", "--user", "a b", "--name", "A"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "user id" in bad.stderr


def test_hub_serve_prints_its_url_and_refuses_bad_settings() -> None:
    env = {**os.environ, "HUB_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Chat hub running at http://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    bad = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env={**os.environ, "HUB_MAX_TEXT": "-1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "HUB_MAX_TEXT" in bad.stderr


async def test_shutdown_drains_clients_with_1012(start_hub: HubFactory) -> None:
    hub = await start_hub()
    client = await hub.connect("ann")
    await client.drain()
    closing = asyncio.create_task(hub.server.close())
    with pytest.raises(Closed):
        await client.drain(5)
    assert client.ws.close_code == 1012
    await closing
