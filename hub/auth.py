"""Tokens: HS256 JWTs that host applications mint with the shared secret, checked by every worker."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import jwt

from hub.protocol import ROOM_GRANT_RE, USER_ID_RE, User


class AuthError(Exception):
    """A token that cannot be accepted; the message says what to do about it."""


def mint_token(
    secret: str,
    user_id: str,
    name: str,
    ttl: float,
    *,
    guest: bool = False,
    rooms: Sequence[str] | None = None,
) -> str:
    """Sign a token for ``user_id``; host applications do the same with their own JWT library."""
    if not USER_ID_RE.fullmatch(user_id):
        raise ValueError("user id must be 1-64 characters of A-Z a-z 0-9 _ . -")
    clean = name.strip()
    if not 1 <= len(clean) <= 64:
        raise ValueError("name must be 1-64 characters")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "name": clean, "iat": now, "exp": now + int(ttl)}
    if guest:
        claims["guest"] = True
    if rooms is not None:
        claims["rooms"] = list(rooms)
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, max_ttl: float | None = None) -> User:
    """Check signature, algorithm, expiry and lifetime, and return the user the token names."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("Your token has expired; sign in again to get a new one.") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"Your token is not valid ({exc}); sign in again.") from None
    now = time.time()
    exp, iat = claims["exp"], claims.get("iat", now)
    if max_ttl is not None and exp - now > max_ttl + 60:
        raise AuthError(
            f"The token lives longer than this hub allows ({max_ttl:g} s); mint a shorter one."
        )
    if not isinstance(iat, int | float) or iat > now + 60:
        raise AuthError("The token's 'iat' must be a time that has passed.")
    sub, name = claims.get("sub"), claims.get("name", claims.get("sub"))
    if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub):
        raise AuthError("The token's 'sub' must be 1-64 characters of A-Z a-z 0-9 _ . -.")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise AuthError("The token's 'name' must be 1-64 characters.")
    return User(
        id=sub,
        name=name.strip(),
        guest=claims.get("guest") is True,
        rooms=_room_grants(claims.get("rooms")),
        issued=int(iat),
        expires=int(exp),
    )


def _room_grants(value: object) -> tuple[str, ...] | None:
    """The ``rooms`` claim: room names, or prefixes ending in ``*``; absent means every room."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise AuthError("The token's 'rooms' must be a list of at most 100 room names.")
    for grant in value:
        if not isinstance(grant, str) or not ROOM_GRANT_RE.fullmatch(grant):
            raise AuthError(
                f"The token's 'rooms' entry {grant!r} must be a room name (a-z 0-9 _ -) "
                "or such a prefix ending in '*'."
            )
    return tuple(value)


def guest_user_id() -> str:
    """A fresh id for a guest; random so two guests with one name stay apart."""
    return "guest-" + secrets.token_hex(6)
