"""A private redis-server per test, on its own port, so tests never touch a shared Redis."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """Runs ``redis-server`` without persistence on a fixed port; restartable on that port.

    Usage: ``with RedisServer() as server: ... server.url ...``; ``stop()``/``kill()`` end it,
    ``start()`` brings it back on the same port (with an empty dataset), ``pause()``/``resume()``
    freeze it with SIGSTOP/SIGCONT to simulate a half-open link.
    """

    def __init__(
        self, port: int | None = None, *, startup_timeout: float = 10.0, unix_socket: bool = False
    ) -> None:
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="hub-redis-"))
        self.socket_path = self._dir / "redis.sock" if unix_socket else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The ``unix://`` URL of this server; needs ``unix_socket=True``."""
        if self.socket_path is None:
            raise ValueError("this RedisServer was made without unix_socket=True")
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        """True while the process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start (or restart) the server on ``self.port`` and wait until it answers PING."""
        if self.running:
            return self
        log = (self._dir / "redis.log").open("ab")
        unix = [] if self.socket_path is None else ["--unixsocket", str(self.socket_path)]
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                *unix,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
            if _answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """End the server gracefully (SIGTERM) and wait for it to exit."""
        proc = self._proc
        if proc is None:
            return
        if self._paused:
            self.resume()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._proc = None

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
        self._proc = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote, for failure messages."""
        path = self._dir / "redis.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def cleanup(self) -> None:
        """Kill the server if it still runs and remove its directory."""
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _serve() -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"{REDIS_SERVER} is not installed")
    with RedisServer() as server:
        yield server


def redis_server_fixture(scope: str = "function", name: str = "redis_server") -> Any:
    """Make a pytest fixture yielding a started ``RedisServer``, cleaned up after its scope.

    In a conftest: ``redis_server = redis_server_fixture()``, or
    ``shared_redis = redis_server_fixture("session", name="shared_redis")``.
    """
    return pytest.fixture(scope=scope, name=name)(_serve)  # type: ignore[call-overload]


redis_server = redis_server_fixture()
"""A fresh server per test; import it into a conftest to use it."""
