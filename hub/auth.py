"""Tokens: HS256 JWTs that host applications mint with the shared secret, checked by every worker."""

from __future__ import annotations

import secrets
import time

import jwt

from hub.protocol import USER_ID_RE, User


class AuthError(Exception):
    """A token that cannot be accepted; the message says what to do about it."""


def mint_token(secret: str, user_id: str, name: str, ttl: float) -> str:
    """Sign a token for ``user_id``; host applications do the same with their own JWT library."""
    if not USER_ID_RE.match(user_id):
        raise ValueError("user id must be 1-64 characters of A-Z a-z 0-9 _ . -")
    clean = name.strip()
    if not 1 <= len(clean) <= 64:
        raise ValueError("name must be 1-64 characters")
    now = int(time.time())
    claims = {"sub": user_id, "name": clean, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str) -> User:
    """Check signature, algorithm and expiry, and return the user the token names."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("Your token has expired; sign in again to get a new one.") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"Your token is not valid ({exc}); sign in again.") from None
    sub, name = claims.get("sub"), claims.get("name", claims.get("sub"))
    if not isinstance(sub, str) or not USER_ID_RE.match(sub):
        raise AuthError("The token's 'sub' must be 1-64 characters of A-Z a-z 0-9 _ . -.")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise AuthError("The token's 'name' must be 1-64 characters.")
    return User(id=sub, name=name.strip())


def guest_user_id() -> str:
    """A fresh id for a guest; random so two guests with one name stay apart."""
    return "guest-" + secrets.token_hex(6)
