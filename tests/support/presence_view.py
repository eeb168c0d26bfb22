"""What a client knows of who is online, built as a client must: snapshot, then diffs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def online_view(frames: Iterable[dict[str, Any]], room: str) -> dict[str, str] | None:
    """Member id → name after applying every ``joined``/``presence`` of ``room`` in order
    (a snapshot replaces the view, a diff edits it); None before any. For rooms that fit one
    snapshot page, this is everyone online."""
    view: dict[str, str] | None = None
    for frame in frames:
        if frame.get("type") not in ("joined", "presence") or frame.get("room") != room:
            continue
        if "members" in frame:
            view = {m["id"]: m["name"] for m in frame["members"]}
            continue
        if view is None:
            continue
        for member in frame.get("joins", []):
            view[member["id"]] = member["name"]
        for user_id in frame.get("leaves", []):
            view.pop(user_id, None)
    return view


def online_count(frames: Iterable[dict[str, Any]], room: str) -> int | None:
    """The latest ``online`` count the client was told for ``room``."""
    count = None
    for frame in frames:
        if frame.get("type") in ("joined", "presence", "members") and frame.get("room") == room:
            count = frame["online"]
    return count
