"""A reply's request: the channel's log up to the message it answers, as the model sees it."""

from __future__ import annotations

import json

from hub.broker.base import ChannelLog
from hub.llm.base import LLMRequest, Turn
from hub.protocol import channel_kind, parse_id

CONTEXT_SLACK = 50
"""Messages read beyond ``HUB_CONTEXT_MESSAGES``, for those said after the one a reply answers."""


async def build_request(
    log: ChannelLog, channel: str, limit: int, upto: str, partial: str
) -> LLMRequest:
    """The conversation up to message ``upto`` (so a takeover asks what the first worker
    asked) and the reply so far; at most ``limit`` messages."""
    entries, _more = await log.history(channel, None, limit + CONTEXT_SLACK)
    if upto:
        bound = parse_id(upto)
        entries = [e for e in entries if parse_id(e.id) <= bound]
    turns: list[Turn] = []
    names: set[str] = set()
    for entry in entries[-limit:]:
        body = json.loads(entry.body)
        author = body.get("author", {})
        role = author.get("role")
        if role == "user":
            turns.append(Turn("user", body.get("text", ""), author.get("name", "")))
            names.add(author.get("name", ""))
        elif role == "assistant" and body.get("text"):
            turns.append(Turn("assistant", body["text"]))
    kind, _name = channel_kind(channel)
    return LLMRequest(
        channel=channel, turns=turns, room=kind == "room", members=sorted(names), partial=partial
    )
