"""Child processes of a local deployment: start, watch, stop them, bounded, and free ports.

Shared by ``deploy.cluster`` (hub workers, nginx, one Redis) and ``deploy.redis_cluster``
(the nodes of a Redis Cluster). Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

#: How long a SIGKILLed process may take to be reaped before we give up on it.
KILL_WAIT = 5.0


class ClusterError(Exception):
    """A part of the cluster did not start or stop; the message says which and shows its log."""


# --------------------------------------------------------------------------- helpers


def find_binary(name: str, explicit: str | None = None) -> str:
    """Path of ``name`` (``nginx``, ``redis-server``): the explicit one, else PATH, else sbin."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ClusterError(f"{explicit} is not an executable file")
        return explicit
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    hint = {"nginx": "apt-get install nginx-light", "redis-server": "apt-get install redis-server"}
    raise ClusterError(f"{name} not found on PATH or in sbin; install it ({hint.get(name, name)})")


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host``; never the same one twice in this process."""
    with _ports_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise ClusterError("could not find a free TCP port")


def check_port_free(host: str, port: int) -> None:
    """Raise a readable error when ``host:port`` cannot be bound (something else listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ClusterError(
                f"cannot use {host}:{port} ({exc.strerror}); pick another port"
            ) from None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server at ``host:port`` answers PING (not while loading); a server
    that wants a password first (NOAUTH) is up too."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: ManagedProcess | None = None,
) -> None:
    """Poll ``check`` until it holds; fail early when ``process`` exits, late at ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if check():
            return
        if process is not None and not process.alive():
            raise ClusterError(
                f"{process.name} exited with {process.returncode} while waiting for {what}\n"
                + process.log_tail()
            )
        if time.monotonic() >= deadline:
            tail = process.log_tail() if process is not None else ""
            raise ClusterError(f"timed out after {timeout:g} s waiting for {what}\n{tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent thread dies.

    Only from the main thread: the kernel ties the signal to the *thread* that forked, so a
    child started from a pool thread (``asyncio.to_thread``) would be killed when that thread
    ends. Elsewhere, or off Linux, there is no hook and ``cluster.py down`` cleans up.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (Linux), or None where /proc does not tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """One child process, its log file, and bounded ways to stop it.

    The child runs in its own session, so its process group id is its pid: ``kill``
    reaches helpers it forked too (nginx's worker processes).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the current (or last) run, None before the first start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run (negative: killed by that signal), None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.alive():
            raise ClusterError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),  # only calls prctl, see there
                )
            except OSError as exc:
                raise ClusterError(f"cannot start {self.name}: {exc}") from exc

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (not its group); nothing if it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to exit; its status, or None if it still runs."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int | None:
        """SIGKILL the process and its group at once; the exit status (-9), None if never started."""
        if self._proc is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        code = self.wait(KILL_WAIT)
        if code is None:
            raise ClusterError(
                f"{self.name} (pid {self._proc.pid}) survived SIGKILL for {KILL_WAIT} s"
            )
        return code

    def stop(self, timeout: float, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait ``timeout`` s, then SIGKILL what is left; the exit status.

        The group is SIGKILLed after a clean exit as well, so no straggling helper survives.
        """
        if self._proc is None:
            return None
        self.send(sig)
        self.send(signal.SIGCONT)  # a stopped (SIGSTOP) process handles sig only once resumed
        code = self.wait(timeout)
        if code is None:
            self._note(f"did not exit {timeout:g} s after {sig.name}; sending SIGKILL")
            return self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path}:\n{tail}"

    def _note(self, message: str) -> None:
        with contextlib.suppress(OSError), self.log_path.open("a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} supervisor: {message}\n")


def port_bindable(port: int) -> bool:
    try:
        check_port_free("127.0.0.1", port)
    except ClusterError:
        return False
    return True
