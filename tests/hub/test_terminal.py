"""``hub chat`` driven through a pseudo-terminal, as a person types, against a real hub process.

The hub process is killed (SIGKILL) and a new one starts on the same port and Redis: the
terminal says it reconnected, shows what was said meanwhile once, and goes on chatting.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.processes import free_port, http_status
from hub.auth import mint_token
from tests.conftest import SECRET
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0
"""Upper bound of each wait; reaching it fails the test."""


class Hub:
    """``python -m hub serve`` on a fixed port, so a successor can take the same address."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_PORT": str(self.port),
            "HUB_HOST": "127.0.0.1",
            "HUB_SECRET": SECRET,
            "HUB_API_KEY": "backend-key",
            "HUB_BROKER_URL": redis_url,
            "HUB_REDIS_PREFIX": "term" + uuid.uuid4().hex[:8],
            "HUB_LLM": "echo",
            "HUB_ECHO_DELAY": "0.01",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while http_status(self.url + "/health", 0.5) != 200:
            assert time.monotonic() < deadline and self.proc.poll() is None, "hub did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def publish(self, channel: str, text: str) -> None:
        request = urllib.request.Request(
            self.url + "/api/publish",
            data=json.dumps({"channel": channel, "text": text}).encode(),
            headers={"Authorization": "Bearer backend-key", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()


class Pty:
    """A program on a pseudo-terminal: what it printed so far, and typing into it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.output = ""

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def wait_for(self, text: str, count: int = 1) -> str:
        deadline = time.monotonic() + WAIT
        while self.output.count(text) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} (x{count}) on the terminal:\n{self.output}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the program exited and closed the terminal
                    time.sleep(0.05)
        return self.output

    def close(self) -> int:
        try:
            return self.proc.wait(10)
        finally:
            os.close(self.master)


@pytest.fixture
def hub(shared_redis: RedisServer) -> Iterator[Hub]:
    server = Hub(str(shared_redis.url))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_hub_chat_in_a_terminal_streams_replies_and_survives_a_hub_restart(hub: Hub) -> None:
    token = mint_token(SECRET, "ann", "Ann", 3600)
    env = {**hub.env, "HUB_TOKEN": token}
    term = Pty([sys.executable, "-m", "hub", "chat", "--url", hub.url], env)
    try:
        term.wait_for("Signed in as Ann, in your private chat")
        term.wait_for("Hi Ann!")  # the greeting of a first session
        term.type("hello from a terminal")
        term.wait_for("Echo: hello from a terminal")
        # Once as typed (the terminal echoes it), once in the reply: not printed back a second time.
        assert term.output.count("hello from a terminal") == 2

        hub.kill()
        hub.start()
        hub.publish("dm:ann", "said while you were away")
        term.wait_for("(reconnected to worker")
        term.wait_for("said while you were away")
        term.type("/join lab")
        term.wait_for("(now in #lab)")
        term.type("@assistant still there?")
        term.wait_for("Echo: still there?")
        term.type("/quit")
        assert term.close() == 0
    except BaseException:
        term.proc.kill()
        term.close()
        raise
    assert term.output.count("said while you were away") == 1
    assert term.output.count("Hi Ann!") == 1
