"""Single-use tickets: a browser's ``EventSource`` cannot send a token, so it trades one for these."""

from __future__ import annotations

import hashlib
import json
import re
import secrets

from hub.broker.base import Tickets
from hub.protocol import User, user_claims

TICKET_TTL = 60.0
"""Seconds a ticket stays valid if nobody uses it."""
TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _key(ticket: str) -> str:
    """Tickets are stored under their hash, so the broker's own logs hold nothing usable."""
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(broker: Tickets, user: User) -> str:
    """A fresh ticket standing for ``user`` once, within ``TICKET_TTL``, on any worker."""
    ticket = secrets.token_urlsafe(24)
    await broker.ticket_put(_key(ticket), json.dumps(user_claims(user)), TICKET_TTL)
    return ticket


async def redeem_ticket(broker: Tickets, ticket: str) -> User | None:
    """The user a ticket stands for, using it up; None when unknown, used or expired."""
    if not TICKET_RE.fullmatch(ticket):
        return None
    raw = await broker.ticket_take(_key(ticket))
    return None if raw is None else User.model_validate_json(raw)
