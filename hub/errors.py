"""One error hierarchy: every refusal the hub sends carries a wire code, a sentence and a wait.

The WebSocket ``error`` frame, the HTTP JSON error body and the Python client all speak these
codes; the HTTP status of each code is derived here, in one place.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, get_args

ErrorCode = Literal[
    "bad_frame",
    "unknown_type",
    "invalid",
    "unauthorized",
    "forbidden",
    "not_found",
    "too_long",
    "rate_limited",
    "quota_exceeded",
    "busy",
    "llm_unavailable",
    "llm_error",
    "unavailable",
    "internal",
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)

HTTP_STATUS: dict[str, int] = {
    "bad_frame": 400,
    "unknown_type": 400,
    "invalid": 400,
    "too_long": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "busy": 503,
    "llm_unavailable": 503,
    "llm_error": 502,
    "unavailable": 503,
    "internal": 500,
}
"""HTTP status of each error code (tests check that every code has one)."""


class CloseCode(IntEnum):
    """WebSocket close codes of the protocol (docs/protocol.md, "Close codes")."""

    NORMAL = 1000
    TOO_BIG = 1009
    RESTARTING = 1012
    TRY_AGAIN = 1013
    UNAUTHORIZED = 4001
    TOO_SLOW = 4008
    ABUSE = 4029


class HubError(Exception):
    """A refusal a person can act on: wire ``code``, a ``message`` sentence, ``retry_after`` s."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        ref: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        """The HTTP status this refusal answers with."""
        return HTTP_STATUS.get(self.code, 500)


class FrameError(HubError):
    """A client frame or request that cannot be accepted."""


UNAVAILABLE = "The hub cannot reach its message store right now; try again in a moment."
"""What users are told when the broker cannot be reached (its address stays in the log)."""


def unavailable(ref: str | None = None) -> FrameError:
    """The refusal for a broker that cannot be reached; its internals stay in the log."""
    return FrameError("unavailable", UNAVAILABLE, ref, 1.0)


def refusal_close_code(exc: HubError) -> CloseCode:
    """How a connection refused at its start closes: 4001 for identity, else 4029 (back off)."""
    return CloseCode.UNAUTHORIZED if exc.code == "unauthorized" else CloseCode.ABUSE
