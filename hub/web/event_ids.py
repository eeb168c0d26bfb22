"""SSE event ids: where a stream is, so a reconnect with ``Last-Event-ID`` has no gap and no repeat.

An id lists the newest stored id per channel and the last delta seq per reply in flight:
``dm:ann=1732-0,room:lab=1733-2,r0a1b=12``.
"""

from __future__ import annotations

import re
from typing import Any

from hub.protocol import CHANNEL_RE, parse_id, valid_stream_id

REPLY_RE = re.compile(r"^r[0-9a-f]{1,32}$")
MAX_PARTS = 200
"""Parts read from a Last-Event-ID at most; a reply's part goes when the reply ends."""


class StreamPosition:
    """What one event stream has delivered; decides which frames are new and names the spot."""

    def __init__(self, cursor: dict[str, str], seqs: dict[str, int]) -> None:
        self.cursor = cursor
        self.seqs = seqs

    @classmethod
    def decode(cls, value: str) -> StreamPosition:
        """Read a Last-Event-ID back, ignoring parts that are neither channel=id nor reply=seq."""
        cursor: dict[str, str] = {}
        seqs: dict[str, int] = {}
        for part in value.split(",")[:MAX_PARTS]:
            key, _, last = part.strip().partition("=")
            if CHANNEL_RE.fullmatch(key) and valid_stream_id(last):
                cursor[key] = last
            elif REPLY_RE.fullmatch(key) and last.isdigit() and len(last) < 10:
                seqs[key] = int(last)
        return cls(cursor, seqs)

    def encode(self) -> str:
        """The id of the next event; ``-`` while nothing is known yet."""
        parts = [f"{c}={last}" for c, last in sorted(self.cursor.items())]
        parts += [f"{r}={seq}" for r, seq in self.seqs.items()]
        return ",".join(parts) or "-"

    def admit(self, frame: dict[str, Any]) -> bool:
        """Whether the client lacks this frame; moves the position past it."""
        ftype = frame.get("type")
        if ftype == "welcome":
            for channel, ok in frame.get("resumed", {}).items():
                if not ok:
                    self.cursor.pop(channel, None)
            self.cursor.update(frame.get("last_ids", {}))
        elif ftype in ("message", "done") and "id" in frame:
            channel, message_id = str(frame["channel"]), str(frame["id"])
            last = self.cursor.get(channel)
            if last is not None and parse_id(message_id) <= parse_id(last):
                return False
            self.cursor[channel] = message_id
            self.seqs.pop(str(frame.get("reply")), None)
        elif ftype == "delta":
            reply, seq = str(frame["reply"]), int(frame["seq"])
            if seq <= self.seqs.get(reply, -1):
                return False
            self.seqs.pop(reply, None)
            self.seqs[reply] = seq
            while len(self.seqs) > MAX_PARTS // 4:
                del self.seqs[next(iter(self.seqs))]
        return True
