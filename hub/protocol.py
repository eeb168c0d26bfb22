"""Every frame of the wire protocol (docs/protocol.md) as pydantic models; no I/O here."""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hub.errors import ErrorCode, FrameError

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROOM_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
CHANNEL_RE = re.compile(r"^(dm:[A-Za-z0-9_.-]{1,64}|room:[a-z0-9_-]{1,64})$")
STREAM_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
ROOM_GRANT_RE = re.compile(r"^[a-z0-9_-]{1,64}\*?$|^\*$")
"""A token's room grant: a room name, a prefix ending in ``*``, or ``*`` for every room."""
_ID_PART_MAX = 2**64 - 1


def valid_stream_id(value: str) -> bool:
    """``ms-seq`` with both parts unsigned 64-bit numbers, as Redis Streams accept."""
    if not STREAM_ID_RE.fullmatch(value):
        return False
    ms, seq = parse_id(value)
    return ms <= _ID_PART_MAX and seq <= _ID_PART_MAX


def _check_stream_id(value: str) -> str:
    if not valid_stream_id(value):
        raise ValueError("must be a message id 'ms-seq' of two numbers below 2^64")
    return value


RoomName = Annotated[str, Field(pattern=ROOM_RE.pattern)]
UserId = Annotated[str, Field(pattern=USER_ID_RE.pattern)]
MEMBERS_PAGE = 100
"""Members in a presence snapshot (``joined``, first ``presence``) and a default ``members`` page."""
ChannelName = Annotated[str, Field(pattern=CHANNEL_RE.pattern)]
MessageId = Annotated[str, Field(max_length=41), AfterValidator(_check_stream_id)]
Ref = Annotated[str, Field(min_length=1, max_length=128)]

Role = Literal["user", "assistant", "system"]
StopReason = Literal["end", "max_tokens", "stopped", "error", "interrupted"]


def channel_kind(channel: str) -> tuple[str, str]:
    """Split ``dm:alice`` into ``("dm", "alice")``."""
    kind, _, name = channel.partition(":")
    return kind, name


def dm_channel(user_id: str) -> str:
    """The private channel of a user."""
    return f"dm:{user_id}"


def room_channel(room: str) -> str:
    """The channel of a room."""
    return f"room:{room}"


def parse_id(message_id: str) -> tuple[int, int]:
    """Order message ids numerically (``ms-seq``), as Redis Streams do."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _ClientFrame(_Frame):
    ref: Ref | None = None


class Hello(_ClientFrame):
    type: Literal["hello"]
    token: str = Field(min_length=1, max_length=4096)
    resume: dict[ChannelName, MessageId] | None = Field(None, max_length=200)


class Join(_ClientFrame):
    type: Literal["join"]
    room: RoomName


class Leave(_ClientFrame):
    type: Literal["leave"]
    room: RoomName


class Send(_ClientFrame):
    type: Literal["send"]
    channel: ChannelName | None = None
    text: str = Field(min_length=1)


class Stop(_ClientFrame):
    type: Literal["stop"]
    reply: str = Field(min_length=1, max_length=64)


class HistoryRequest(_ClientFrame):
    type: Literal["history"]
    channel: ChannelName
    before: MessageId | None = None
    limit: int = Field(50, ge=1, le=200)


class Ping(_ClientFrame):
    type: Literal["ping"]


class MembersRequest(_ClientFrame):
    type: Literal["members"]
    room: RoomName
    after: UserId | None = None
    limit: int = Field(MEMBERS_PAGE, ge=1, le=200)


ClientFrame = Annotated[
    Hello | Join | Leave | Send | Stop | HistoryRequest | Ping | MembersRequest,
    Field(discriminator="type"),
]
CLIENT_TYPES = frozenset({"hello", "join", "leave", "send", "stop", "history", "ping", "members"})
_client_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


def parse_client_frame(raw: str) -> ClientFrame:
    """Parse one text frame, raising FrameError with a sentence a person can act on."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise FrameError("bad_frame", "Frames must not nest this deeply.") from None
    except ValueError:
        raise FrameError(
            "bad_frame", "Frames must be JSON objects; this one is not JSON."
        ) from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "Frames must be JSON objects with a string 'type'.")
    ref = data.get("ref") if isinstance(data.get("ref"), str) else None
    ftype = data.get("type")
    if not isinstance(ftype, str) or ftype not in CLIENT_TYPES:
        known = ", ".join(sorted(CLIENT_TYPES))
        raise FrameError("unknown_type", f"Unknown frame type {ftype!r}; use one of: {known}.", ref)
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise FrameError("invalid", describe_validation(exc), ref) from None


def describe_validation(exc: ValidationError) -> str:
    """One sentence naming each bad field and what it needs."""
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("Hello", "Join"))]
        field = ".".join(loc[1:] if loc and loc[0] in CLIENT_TYPES else loc) or "frame"
        parts.append(f"{field}: {err['msg']}")
    return "Invalid frame: " + "; ".join(parts) + "."


class User(_Frame):
    id: str
    name: str
    # What the token says beyond who: never sent to clients.
    guest: bool = Field(False, exclude=True)
    rooms: tuple[str, ...] | None = Field(None, exclude=True)
    issued: int = Field(0, exclude=True)
    expires: int = Field(0, exclude=True)


def user_claims(user: User) -> dict[str, Any]:
    """Every field of a user, those never sent to clients included (to hand it on)."""
    return {name: getattr(user, name) for name in User.model_fields}


class Author(_Frame):
    id: str
    name: str
    role: Role


class Usage(_Frame):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class Limits(_Frame):
    max_frame: int
    max_text: int
    history_max: int
    rate: float
    rate_burst: int


class Welcome(_Frame):
    type: Literal["welcome"] = "welcome"
    user: User
    worker: str
    channels: list[str]
    limits: Limits
    resumed: dict[str, bool] = {}
    last_ids: dict[str, str] = {}
    """Newest stored id of each channel not resumed, so a fresh client can resume later."""
    ref: str | None = None


class Message(_Frame):
    type: Literal["message"] = "message"
    channel: str
    id: str
    author: Author
    text: str
    ts: int
    ref: str | None = None
    html: str | None = None
    reply: str | None = None
    stop_reason: StopReason | None = None
    usage: Usage | None = None
    taken_over: bool | None = None


class Delta(_Frame):
    type: Literal["delta"] = "delta"
    channel: str
    reply: str
    seq: int
    text: str


class Done(_Frame):
    type: Literal["done"] = "done"
    channel: str
    reply: str
    id: str
    text: str
    html: str
    stop_reason: StopReason
    author: Author | None = None
    ts: int | None = None
    usage: Usage | None = None
    taken_over: bool | None = None


class Member(_Frame):
    id: str
    name: str


class Joined(_Frame):
    type: Literal["joined"] = "joined"
    room: str
    online: int
    members: list[Member]
    more: bool
    history: list[dict[str, Any]]
    ref: str | None = None


class Left(_Frame):
    type: Literal["left"] = "left"
    room: str
    ref: str | None = None


class Presence(_Frame):
    """A snapshot (``members``, ``more``) the first time, then diffs (``joins``, ``leaves``)."""

    type: Literal["presence"] = "presence"
    room: str
    online: int
    members: list[Member] | None = None
    more: bool | None = None
    joins: list[Member] | None = None
    leaves: list[str] | None = None


class Members(_Frame):
    type: Literal["members"] = "members"
    room: str
    members: list[Member]
    more: bool
    online: int
    ref: str | None = None


class History(_Frame):
    type: Literal["history"] = "history"
    channel: str
    messages: list[dict[str, Any]]
    more: bool
    ref: str | None = None


class Ack(_Frame):
    type: Literal["ack"] = "ack"
    ref: str | None
    id: str


class Error(_Frame):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    ref: str | None = None
    retry_after: float | None = None
    channel: str | None = None
    reply: str | None = None


class Pong(_Frame):
    type: Literal["pong"] = "pong"
    ref: str | None = None


def encode(frame: _Frame) -> str:
    """Serialize a server frame once, leaving out fields that are unset."""
    return frame.model_dump_json(exclude_none=True)


def entry_body(message: Message | Done) -> str:
    """The JSON object a channel log stores for a message: every field but ``type`` and ``id``."""
    if isinstance(message, Done):
        body = Message(
            channel=message.channel,
            id="0-0",
            author=message.author or Author(id="assistant", name="Assistant", role="assistant"),
            text=message.text,
            ts=message.ts or 0,
            html=message.html,
            reply=message.reply,
            stop_reason=message.stop_reason,
            usage=message.usage,
            taken_over=message.taken_over,
        )
    else:
        body = message
    return body.model_dump_json(exclude_none=True, exclude={"type", "id"})


def frame_from_entry(frame_type: str, message_id: str, body: str) -> str:
    """Build ``{"type":..., "id":..., <body>}`` without parsing the stored body again."""
    return f'{{"type":"{frame_type}","id":"{message_id}",{body[1:]}'


def message_dict(entry_id: str, body: str) -> dict[str, Any]:
    """A stored entry as the ``message`` frame object clients receive."""
    data: dict[str, Any] = json.loads(frame_from_entry("message", entry_id, body))
    return data


_STORED_HEADS = ('{"type":"message","id":"', '{"type":"done","id":"')


def stored_id(payload: str) -> str | None:
    """The id of a frame built by ``frame_from_entry`` (message or done), read off its head."""
    if not payload.startswith(_STORED_HEADS):
        return None
    start = payload.index('"id":"') + 6
    return payload[start : payload.index('"', start)]


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of ``ts``."""
    return int(time.time() * 1000)
