"""Resume without gaps or doubles: replay a snapshot, then let through only live frames it lacks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hub.broker.base import Envelope, InflightReply, Kind, Replay
from hub.protocol import Delta, encode, frame_from_entry, parse_id


@dataclass(slots=True)
class Cursor:
    """What a replay already gave one connection in one channel."""

    last_id: tuple[int, int]
    next_seq: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def admits(self, frame: Envelope) -> bool:
        """Whether a live frame, received while the replay was read, is new to the client
        (read off its envelope: no JSON is parsed)."""
        if frame.stored:
            return parse_id(frame.id) > self.last_id
        if frame.kind is Kind.DELTA:
            return frame.reply not in self.finished and frame.seq >= self.next_seq.get(
                frame.reply, 0
            )
        return True


def replay_frames(channel: str, after: str, replay: Replay) -> tuple[list[str], Cursor]:
    """Frames for a resuming client: stored messages after its id, then partial replies."""
    frames: list[str] = []
    cursor = Cursor(parse_id(after))
    for entry in replay.entries:
        frames.append(frame_from_entry("message", entry.id, entry.body))
        cursor.last_id = max(cursor.last_id, parse_id(entry.id))
        reply = json.loads(entry.body).get("reply")
        if reply:
            cursor.finished.add(str(reply))
    frames.extend(inflight_frames(channel, replay.replies, cursor))
    return frames, cursor


def inflight_frames(channel: str, replies: list[InflightReply], cursor: Cursor) -> list[str]:
    """Every reply still streaming, as deltas from seq 0; the cursor then skips live repeats."""
    frames: list[str] = []
    for state in replies:
        if state.reply in cursor.finished:
            continue
        for seq, text in enumerate(state.deltas):
            frames.append(encode(Delta(channel=channel, reply=state.reply, seq=seq, text=text)))
        cursor.next_seq[state.reply] = len(state.deltas)
    return frames
