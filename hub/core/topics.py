"""Every pub/sub topic of the hub, named and parsed in one place.

Hub channels (``dm:alice``, ``room:lobby``) are topics as they are; ``user:<id>`` carries
membership changes to every connection of a user, ``worker:<id>`` commands for one worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from hub.broker.base import Envelope, Kind

TopicKind = Literal["channel", "user", "worker"]


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its kind and the channel, user id or worker id it names."""

    kind: TopicKind
    name: str


def user_topic(user_id: str) -> str:
    """The topic reaching every connection of a user, on any worker."""
    return f"user:{user_id}"


def worker_topic(worker: str) -> str:
    """The topic of one worker's commands."""
    return f"worker:{worker}"


def parse_topic(topic: str) -> Topic:
    """Which kind of topic this is; anything that is not a user or worker topic is a channel."""
    head, _, rest = topic.partition(":")
    if head == "user":
        return Topic("user", rest)
    if head == "worker":
        return Topic("worker", rest)
    return Topic("channel", topic)


def command(op: str, **fields: Any) -> Envelope:
    """A command for workers (never sent to clients): ``{"op": op, ...}``."""
    return Envelope(Kind.COMMAND, json.dumps({"op": op, **fields}))


def read_command(frame: Envelope) -> dict[str, Any] | None:
    """The fields of a command frame, or None when the frame is not a well-formed command."""
    if frame.kind is not Kind.COMMAND:
        return None
    try:
        data = json.loads(frame.payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("op"), str) else None
