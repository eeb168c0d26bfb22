"""Topic names, commands, envelopes and the error hierarchy: the vocabulary every module shares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.broker.base import Envelope, Kind
from hub.core.topics import Topic, command, parse_topic, read_command, user_topic, worker_topic
from hub.errors import ERROR_CODES, HTTP_STATUS, CloseCode, FrameError, HubError
from hub.llm.base import LLMError

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_topics_parse_back_to_what_named_them() -> None:
    assert parse_topic(user_topic("ann.b")) == Topic("user", "ann.b")
    assert parse_topic(worker_topic("host:8080")) == Topic("worker", "host:8080")
    assert parse_topic("room:lobby") == Topic("channel", "room:lobby")
    assert parse_topic("dm:ann") == Topic("channel", "dm:ann")


def test_commands_round_trip_and_other_frames_are_not_commands() -> None:
    stop = command("stop", reply="r1")
    assert stop.kind is Kind.COMMAND
    assert read_command(stop) == {"op": "stop", "reply": "r1"}
    assert read_command(Envelope(Kind.EVENT, '{"op":"stop"}')) is None
    assert read_command(Envelope(Kind.COMMAND, "not json")) is None
    assert read_command(Envelope(Kind.COMMAND, '["op"]')) is None


def test_envelope_packs_payloads_holding_the_separator() -> None:
    frame = Envelope(Kind.DELTA, '{"text":"a|b||c"}', reply="r9", seq=12)
    assert Envelope.unpack(frame.pack()) == frame
    stored = Envelope(Kind.DONE, "{}", id="17-3", reply="r9")
    assert Envelope.unpack(stored.pack()).stored
    with pytest.raises(ValueError):
        Envelope.unpack('{"type":"message"}')


def test_every_error_code_has_an_http_status_and_a_doc_line() -> None:
    assert set(HTTP_STATUS) == set(ERROR_CODES)
    assert all(400 <= status < 600 for status in HTTP_STATUS.values())
    doc = DOC.read_text()
    missing = [code for code in ERROR_CODES if f"`{code}`" not in doc]
    assert missing == []


def test_close_codes_are_the_documented_ones() -> None:
    doc = DOC.read_text()
    documented = {int(m) for m in re.findall(r"^\| (\d{4}) \|", doc, flags=re.MULTILINE)}
    assert {int(code) for code in CloseCode} <= documented


def test_one_hierarchy_carries_code_message_retry_and_status() -> None:
    errors: list[HubError] = [
        FrameError("rate_limited", "slow down", "ref1", 2.5),
        LLMError("llm_unavailable", "overloaded", retry_after=3.0),
    ]
    assert [(e.code, e.status, e.retry_after) for e in errors] == [
        ("rate_limited", 429, 2.5),
        ("llm_unavailable", 503, 3.0),
    ]
    assert errors[0].ref == "ref1" and str(errors[1]) == "overloaded"
