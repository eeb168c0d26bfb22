"""The conversation a model sees: attribution, alternation, trimming, cache prefix."""

from __future__ import annotations

import pytest

from hub.llm.base import LLMError, LLMRequest, Turn
from hub.llm.context import (
    Message,
    build_context,
    estimate_tokens,
    members_note,
    render_turn,
    room_name,
)

SYSTEM = "You are helpful."


def test_estimate_is_chars_over_four_plus_overhead() -> None:
    assert estimate_tokens("") == 4
    assert estimate_tokens("abcd") == 5
    assert estimate_tokens("abcde") == 6
    assert estimate_tokens("x" * 400) == 104


def test_dm_turns_become_alternating_messages() -> None:
    request = LLMRequest(
        "dm:alice",
        [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "how are you?")],
    )
    context = build_context(request, SYSTEM, 10_000)
    assert context.system == SYSTEM
    assert context.messages == [
        Message("user", ("hi",)),
        Message("assistant", ("hello",)),
        Message("user", ("how are you?",)),
    ]
    assert context.stable_prefix == 2
    assert context.dropped == 0


def test_consecutive_turns_of_one_role_are_merged() -> None:
    request = LLMRequest(
        "dm:alice",
        [
            Turn("user", "one"),
            Turn("user", "two"),
            Turn("assistant", "a"),
            Turn("assistant", "b"),
            Turn("user", "three"),
        ],
    )
    context = build_context(request, SYSTEM, 10_000)
    assert [m.role for m in context.messages] == ["user", "assistant", "user"]
    assert context.messages[0].parts == ("one", "two")
    assert context.messages[0].text == "one\n\ntwo"
    assert context.messages[1].parts == ("a", "b")


def test_leading_and_trailing_assistant_turns_and_blank_turns_are_dropped() -> None:
    request = LLMRequest(
        "dm:alice",
        [
            Turn("assistant", "Welcome!"),
            Turn("user", "  "),
            Turn("user", "question"),
            Turn("assistant", ""),
            Turn("assistant", "half an answer"),
        ],
    )
    context = build_context(request, SYSTEM, 10_000)
    assert context.messages == [Message("user", ("question",))]
    assert context.stable_prefix == 0


def test_no_user_turn_is_an_llm_error() -> None:
    with pytest.raises(LLMError) as caught:
        build_context(LLMRequest("dm:a", [Turn("assistant", "hi")]), SYSTEM, 1000)
    assert caught.value.code == "llm_error"


def test_room_turns_are_attributed_and_the_system_prompt_says_room() -> None:
    request = LLMRequest(
        "room:lobby",
        [
            Turn("user", "Hi all", author="Alice"),
            Turn("user", "Hey Alice", author="Bob"),
            Turn("assistant", "Hello both"),
            Turn("user", "@assistant what did Bob say?", author="Alice"),
        ],
        room=True,
        members=["Alice", "Bob"],
    )
    context = build_context(request, SYSTEM, 10_000)
    assert context.system.startswith(SYSTEM)
    assert "shared chat room (#lobby) with several people" in context.system
    assert "[Alice]: ..." in context.system
    assert context.messages[0] == Message("user", ("[Alice]: Hi all", "[Bob]: Hey Alice"))
    assert context.messages[1] == Message("assistant", ("Hello both",))
    assert context.messages[2] == Message(
        "user", ("(People in this room: Alice, Bob.)", "[Alice]: @assistant what did Bob say?")
    )


def test_room_system_prompt_does_not_change_with_presence() -> None:
    turns = [Turn("user", "hi", author="Alice")]
    one = build_context(LLMRequest("room:x", turns, room=True, members=["Alice"]), SYSTEM, 9999)
    two = build_context(
        LLMRequest("room:x", turns, room=True, members=["Alice", "Bob"]), SYSTEM, 9999
    )
    assert one.system == two.system


def test_trimming_drops_oldest_turns_to_fit_the_budget() -> None:
    turns = [Turn("user" if i % 2 == 0 else "assistant", f"{i:03d}" + "x" * 396) for i in range(21)]
    budget = estimate_tokens(SYSTEM) + 4 * estimate_tokens(turns[0].text) + 10
    context = build_context(LLMRequest("dm:a", turns), SYSTEM, budget)
    # Four turns fit; the oldest of them is an assistant turn, so it goes too.
    kept = [part[:3] for m in context.messages for part in m.parts]
    assert kept == ["018", "019", "020"]
    assert context.messages[0].role == "user"
    assert context.dropped == 18


def test_the_newest_turn_is_kept_even_over_budget() -> None:
    request = LLMRequest(
        "dm:a", [Turn("user", "old"), Turn("assistant", "ok"), Turn("user", "y" * 4000)]
    )
    context = build_context(request, SYSTEM, 100)
    assert context.messages == [Message("user", ("y" * 4000,))]
    assert context.dropped == 2


def test_helpers() -> None:
    assert room_name("room:lobby") == "lobby"
    assert room_name("dm:alice") == ""
    assert render_turn(Turn("user", " hi ", author=""), room=True) == "[someone]: hi"
    assert render_turn(Turn("assistant", "yes"), room=True) == "yes"
    assert render_turn(Turn("user", "hi", author="Al"), room=False) == "hi"
    assert members_note([]) == ""
    assert members_note(["A", " "]) == "(People in this room: A.)"
