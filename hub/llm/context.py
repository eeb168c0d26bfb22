"""Turn a channel's log into the conversation a model sees, the same way for every provider.

What this module decides, and why:

* **Rooms are attributed.** In a room every user turn becomes ``[Name]: text``, so the
  model knows who said what, and the system prompt says it is in a room with several
  people. The request's ``members`` go into the *newest* message rather than the system
  prompt: the system prompt heads the cached prefix, and a changing member list would
  otherwise throw away the whole cache each time it changed.
* **Roles alternate.** Consecutive turns of one role (several people talking before the
  assistant is asked) become one message with one part per turn; empty turns are dropped,
  and so are assistant turns before the first user turn and after the last one, because
  the APIs want a conversation that starts and ends with the user.
* **The history fits a token budget.** Turns are dropped oldest first until the estimate
  fits ``context_tokens``. The newest turn is always kept, whatever its size. The estimate
  is ``ceil(characters / 4) + 4`` tokens per turn (:func:`estimate_tokens`): counting with
  the API would cost a network round trip before every reply, and English prose averages
  about four characters per token, so the budget is approximate, not exact.
* **The cached prefix stays stable.** :attr:`Context.stable_prefix` is the number of
  messages before the newest user message; the Anthropic provider puts its second cache
  breakpoint on the last of them, so the next reply re-reads all of it from cache. Once the
  budget starts dropping old turns the prefix moves and that reply writes the cache anew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hub.llm.base import LLMError, LLMRequest, Turn

CHARS_PER_TOKEN = 4
"""Characters per token in the estimate; about right for English, generous for code."""

TURN_OVERHEAD_TOKENS = 4
"""Tokens charged per turn for its role marker and separators."""

ROOM_PROMPT = (
    "You are in a shared chat room{name} with several people, not in a private chat. "
    "Each user message starts with the speaker's name in brackets, like [Alice]: ... "
    "Reply to the latest message, address people by name when it helps, and do not start "
    "your reply with a bracketed name."
)


def estimate_tokens(text: str) -> int:
    """Approximate tokens of one turn, without a network round trip (see module docstring)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) + TURN_OVERHEAD_TOKENS


@dataclass(frozen=True, slots=True)
class Message:
    """One API message: consecutive turns of one role, one part per turn."""

    role: Literal["user", "assistant"]
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        """The parts joined, for APIs that take one string per message."""
        return "\n\n".join(self.parts)


@dataclass(frozen=True, slots=True)
class Context:
    """What a provider sends: the system prompt and alternating messages ending with the user."""

    system: str
    messages: list[Message]
    dropped: int = 0
    """How many turns the token budget left out."""

    @property
    def stable_prefix(self) -> int:
        """Messages before the newest user message: the part the next request repeats."""
        return max(0, len(self.messages) - 1)


def room_name(channel: str) -> str:
    """``room:lobby`` -> ``lobby``; empty for other channels."""
    kind, _, name = channel.partition(":")
    return name if kind == "room" else ""


def render_turn(turn: Turn, room: bool) -> str:
    """The text of one turn as the model sees it: attributed in rooms."""
    text = turn.text.strip()
    if room and turn.role == "user":
        return f"[{turn.author.strip() or 'someone'}]: {text}"
    return text


def system_text(system_prompt: str, request: LLMRequest) -> str:
    """The system prompt, plus the room explanation in a room."""
    base = system_prompt.strip()
    if not request.room:
        return base
    name = room_name(request.channel)
    room = ROOM_PROMPT.format(name=f" (#{name})" if name else "")
    return f"{base}\n\n{room}" if base else room


def members_note(members: list[str]) -> str:
    """The room's people, as a part of the newest message."""
    names = ", ".join(m.strip() for m in members if m.strip())
    return f"(People in this room: {names}.)" if names else ""


def build_context(request: LLMRequest, system_prompt: str, budget_tokens: int) -> Context:
    """The conversation for one reply: attributed, trimmed to the budget, merged to alternate."""
    turns = [t for t in request.turns if t.text.strip()]
    while turns and turns[-1].role != "user":
        turns.pop()
    if not turns:
        raise LLMError("llm_error", "There is no message for the assistant to answer.")

    system = system_text(system_prompt, request)
    note = members_note(request.members) if request.room else ""
    rendered = [(t.role, render_turn(t, request.room)) for t in turns]

    left = budget_tokens - estimate_tokens(system) - (estimate_tokens(note) if note else 0)
    keep = 0
    for _, text in reversed(rendered):
        cost = estimate_tokens(text)
        if keep and cost > left:
            break
        left -= cost
        keep += 1
    kept = rendered[len(rendered) - keep :]
    dropped = len(rendered) - keep
    while kept and kept[0][0] != "user":
        kept.pop(0)
        dropped += 1

    messages: list[Message] = []
    for role, text in kept:
        if messages and messages[-1].role == role:
            messages[-1] = Message(role, (*messages[-1].parts, text))
        else:
            messages.append(Message(role, (text,)))
    if note:
        last = messages[-1]
        messages[-1] = Message(last.role, (note, *last.parts))
    return Context(system=system, messages=messages, dropped=dropped)
