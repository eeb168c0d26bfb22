"""The order of a room's online list: by name (case-folded), then id — one string per member.

Both brokers keep members as these strings in sorted order (a Python list, a Redis sorted set
read by lex range), so a page after a member is a range read, not a sort.
"""

from __future__ import annotations

SEP = "\x00"


def sort_key(user_id: str, name: str) -> str:
    """``casefolded name NUL id NUL name``: sorts by name then id (ids never hold NUL)."""
    name = name.replace(SEP, "")
    return f"{name.casefold()}{SEP}{user_id}{SEP}{name}"


def member_of(key: str) -> tuple[str, str]:
    """(user id, display name) of a sort key."""
    _fold, user_id, name = key.split(SEP, 2)
    return user_id, name
