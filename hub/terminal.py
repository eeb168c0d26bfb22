"""``hub chat``: a person at a terminal types lines and watches replies stream in.

Built on ``HubClient`` (reconnects with backoff, resumes, never shows a frame twice). Lines
starting with ``/`` are commands: ``/join ROOM``, ``/dm``, ``/quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Any, TextIO

import aiohttp

from hub.client import HubClient, HubClientError
from hub.protocol import room_channel

HELP = "Type a message and press Enter. /join ROOM, /dm, /quit (or Ctrl-D)."


async def guest_token(url: str, name: str) -> str:
    """A guest token from the hub's ``/api/login`` (where guest login is on)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url.rstrip('/')}/api/login", json={"name": name}) as resp,
    ):
        body = await resp.json()
        if resp.status != 200:
            raise HubClientError("unauthorized", str(body.get("error", {}).get("message")))
        return str(body["token"])


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Blocking reads of stdin on a daemon thread (never holds up the exit); None at EOF."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
    loop.call_soon_threadsafe(queue.put_nowait, None)


class Terminal:
    """Renders frames as lines: others' messages, the assistant's pieces as they come."""

    def __init__(self, client: HubClient, out: TextIO) -> None:
        self.client = client
        self.out = out
        self.channel = ""
        self.mine: set[str] = set()
        self.typed: list[str] = []
        self.shown_replies: set[str] = set()
        self.streaming: str | None = None
        self.welcomes = 0

    def say(self, text: str) -> None:
        if self.streaming is not None:
            self.out.write("\n")
            self.streaming = None
        self.out.write(text + "\n")
        self.out.flush()

    def where(self) -> str:
        return "your private chat" if self.channel.startswith("dm:") else f"#{self.channel[5:]}"

    def show(self, frame: dict[str, Any]) -> None:
        """One frame on screen, if a person would want to see it."""
        ftype = frame.get("type")
        if ftype == "welcome":
            self.welcomes += 1
            if self.welcomes > 1:
                self.say(f"(reconnected to worker {frame['worker']})")
        elif ftype == "message":
            self._message(frame)
        elif ftype == "delta":
            reply = str(frame["reply"])
            if self.streaming != reply:
                self.say(f"[{self._label(frame)}] assistant:")
                self.out.write("  ")
                self.streaming = reply
            self.shown_replies.add(reply)
            self.out.write(str(frame["text"]))
            self.out.flush()
        elif ftype == "done":
            reply = str(frame["reply"])
            if reply not in self.shown_replies:
                self.say(f"[{self._label(frame)}] assistant: {frame['text']}")
            elif self.streaming == reply:
                reason = frame["stop_reason"]
                self.out.write(("" if reason == "end" else f" ({reason})") + "\n")
                self.out.flush()
                self.streaming = None
            self.shown_replies.add(reply)
        elif ftype == "error":
            self.say(f"! {frame.get('message')}")
        elif ftype == "reload":
            self.say(f"(history of {frame['channel']} changed; some messages may be missing)")

    def _message(self, frame: dict[str, Any]) -> None:
        if frame["id"] in self.mine or frame.get("reply") in self.shown_replies:
            return
        author = frame["author"]
        if author["id"] == self.client.user.get("id") and frame["text"] in self.typed:
            self.typed.remove(frame["text"])  # typed here, so already on screen
            return
        if frame.get("reply"):
            self.shown_replies.add(str(frame["reply"]))
        self.say(f"[{self._label(frame)}] {author['name']}: {frame['text']}")

    def _label(self, frame: dict[str, Any]) -> str:
        channel = str(frame.get("channel", ""))
        return "dm" if channel.startswith("dm:") else f"#{channel[5:]}"

    async def command(self, line: str) -> bool:
        """Run a /command; False to quit."""
        word, _, arg = line.partition(" ")
        if word == "/quit":
            return False
        if word == "/dm":
            self.channel = f"dm:{self.client.user['id']}"
        elif word == "/join" and arg.strip():
            room = arg.strip().lstrip("#")
            try:
                await self.client.join(room)
            except HubClientError as exc:
                self.say(f"! {exc.message}")
                return True
            self.channel = room_channel(room)
        else:
            self.say(HELP)
            return True
        self.say(f"(now in {self.where()})")
        return True

    async def post(self, text: str) -> None:
        self.typed.append(text)
        try:
            self.mine.add(await self.client.send(text, channel=self.channel))
        except (HubClientError, TimeoutError) as exc:
            self.say(f"! not sent: {exc}")


async def run_chat(url: str, token: str, room: str | None, out: TextIO = sys.stdout) -> int:
    """Chat until /quit or end of input; 1 when the hub refuses the token."""
    try:
        async with HubClient(url, token) as client:
            term = Terminal(client, out)
            term.channel = f"dm:{client.user['id']}"
            if room:
                await term.command(f"/join {room}")
            term.say(f"Signed in as {client.user['name']}, in {term.where()}. {HELP}")
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()
            shower = asyncio.create_task(_show_all(client, term))
            sends: set[asyncio.Task[None]] = set()
            try:
                while (line := await lines.get()) is not None:
                    if line.startswith("/"):
                        if not await term.command(line.strip()):
                            break
                    elif line.strip():
                        task = asyncio.create_task(term.post(line))
                        sends.add(task)
                        task.add_done_callback(sends.discard)
                if sends:
                    await asyncio.wait(sends, timeout=10)
            finally:
                shower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shower
    except HubClientError as exc:
        print(f"hub chat: {exc.message}", file=sys.stderr)
        return 1
    return 0


async def _show_all(client: HubClient, term: Terminal) -> None:
    async for frame in client.frames():
        term.show(frame)
