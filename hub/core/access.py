"""Who may enter which room: the token's room grants, the rooms open to guests, creation limits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hub.broker.base import RateLimits, Rooms
from hub.errors import FrameError
from hub.protocol import User
from hub.settings import Settings


class AccessBroker(Rooms, RateLimits, Protocol):
    """The broker roles room access uses."""


async def take_or_refuse(
    broker: RateLimits, key: str, rate: float, burst: int, why: str, ref: str | None = None
) -> None:
    """Take one token of a shared bucket, or refuse with ``rate_limited``; ``why`` says what
    was too fast and may name ``{wait}`` (seconds)."""
    wait = await broker.rate_take(key, rate, burst)
    if wait > 0:
        raise FrameError("rate_limited", why.format(wait=wait), ref, round(wait, 2))


def granted(room: str, grants: Iterable[str]) -> bool:
    """Whether a room matches a grant list: exact names, ``prefix*``, or ``*`` for all."""
    return any(g == room or (g.endswith("*") and room.startswith(g[:-1])) for g in grants)


def room_allowed(user: User, room: str, settings: Settings) -> bool:
    """The token's ``rooms`` claim (when it has one) and, for guests, HUB_GUEST_ROOMS."""
    if user.rooms is not None and not granted(room, user.rooms):
        return False
    return not user.guest or granted(room, settings.guest_rooms)


def refusal(user: User, room: str, settings: Settings, ref: str | None) -> FrameError:
    """Why a user may not enter a room, said so a person knows what to do."""
    if user.rooms is not None and not granted(room, user.rooms):
        why = f"Your sign-in does not include the room '{room}'."
    elif settings.guest_rooms:
        why = (
            f"Guests may join only {', '.join(settings.guest_rooms)}; "
            "sign in with an account for other rooms."
        )
    else:
        why = "Guests may not join rooms on this hub; sign in with an account."
    return FrameError("forbidden", why, ref)


async def check_join(
    broker: AccessBroker, settings: Settings, user: User, room: str, ref: str | None
) -> None:
    """Refuse a join the user may not make; creating rooms costs from a per-user bucket."""
    if not room_allowed(user, room, settings):
        raise refusal(user, room, settings, ref)
    mine = await broker.user_rooms(user.id)
    if room in mine:
        return
    if len(mine) >= settings.max_rooms_per_user:
        raise FrameError(
            "forbidden",
            f"You are in {len(mine)} rooms, the most this hub allows; leave one first.",
            ref,
        )
    if await broker.room_size(room):
        return
    await take_or_refuse(
        broker,
        f"rooms:{user.id}",
        settings.room_create_rate,
        settings.room_create_burst,
        "You are creating rooms too fast; wait {wait:.0f} s or join an existing one.",
        ref,
    )
