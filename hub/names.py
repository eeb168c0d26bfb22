"""Display names people choose: visible, and not passing for the hub or its assistant."""

from __future__ import annotations

import unicodedata

RESERVED = frozenset({"assistant", "system", "hub", "admin", "administrator", "moderator"})
"""Names (compared case- and width-insensitively) that only the hub's own authors use."""

_JOINERS = frozenset({"\u200d", "\ufe0f", "\ufe0e"})
"""Invisible characters emoji sequences need (zero-width joiner, variation selectors)."""

_BLANKS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u180e"})
"""Letters and symbols that render as nothing (Hangul fillers, blank Braille)."""


def clean_name(raw: str) -> str:
    """Collapse whitespace and refuse names that are invisible, reordering or impersonating.

    Raises ValueError with a sentence a person can act on.
    """
    name = " ".join(raw.split())
    for char in name:
        category = unicodedata.category(char)
        if char in _JOINERS:
            continue
        if category in ("Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp") or char in _BLANKS:
            raise ValueError(
                f"Names may not contain invisible or direction-changing characters "
                f"(U+{ord(char):04X})."
            )
    if not any(not c.isspace() and c not in _JOINERS for c in name):
        raise ValueError("Enter a name with at least one visible character.")
    folded = unicodedata.normalize("NFKC", name).casefold()
    if folded.strip(" .-_") in RESERVED:
        raise ValueError(f"The name {name!r} is reserved; choose another.")
    return name
