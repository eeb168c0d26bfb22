"""What users are told when a model provider fails, shared by every provider, and what operators see."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from hub.llm.base import LLMError

log = logging.getLogger(__name__)

KEY_REFUSED = (
    "The assistant is not available: the server's API key was refused. "
    "The operator has been told; please try again later."
)


@dataclass(frozen=True, slots=True)
class Service:
    """How the operator's log lines name a provider and the settings that fix it."""

    name: str
    key_setting: str
    model_hint: str


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def spend_limit_error(provider: str, message: str) -> LLMError:
    """What the user sees when the account cannot pay; the operator gets the details."""
    log.error(
        "%s refused the request for billing reasons (%s): raise the spend limit or fix "
        "billing for the server's account",
        provider,
        message or "no message",
    )
    return LLMError(
        "llm_unavailable",
        "The assistant is not available: the server's account has reached its spend limit. "
        "The operator has been told; please try again later.",
    )


def busy_error(retry_after: float | None) -> LLMError:
    """Rate limited or overloaded after every retry allowed."""
    later = f" in {retry_after:.0f} s" if retry_after and retry_after >= 1 else " shortly"
    return LLMError(
        "llm_unavailable",
        f"The assistant is busy right now; please try again{later}.",
        retry_after=retry_after,
    )


def status_error(
    service: Service, status: int, message: str, detail: str, retry_after: float | None
) -> LLMError:
    """An HTTP error answer that retrying did not cure, as one sentence for the user."""
    if status == 401:
        log.error(
            "%s refused the API key (401 %s): set a valid %s for the hub; replies fail until then",
            service.name,
            message or detail,
            service.key_setting,
        )
        return LLMError("llm_unavailable", KEY_REFUSED)
    if status == 403:
        log.error("%s denied the request (403): %s", service.name, message)
        return LLMError(
            "llm_unavailable",
            "The assistant is not available: the server's API key may not make this request. "
            "The operator has been told.",
        )
    if status == 404:
        log.error("%s answered 404 (%s): %s", service.name, message, service.model_hint)
        return LLMError(
            "llm_unavailable",
            "The assistant is not available: the configured model was not found. "
            "The operator has been told.",
        )
    if status in (408, 409, 429) or status >= 500:
        log.warning("%s unavailable after retries (%d): %s", service.name, status, message)
        return busy_error(retry_after)
    log.warning("%s rejected the request (%d): %s", service.name, status, message)
    return LLMError(
        "llm_error", f"The assistant could not answer this conversation: {message or detail}."
    )


def stream_error(detail: str) -> LLMError:
    """An error event in the middle of a reply."""
    return LLMError(
        "llm_error", f"The assistant's reply broke off with an error ({detail}); please try again."
    )


def stalled_error(read_timeout: float) -> LLMError:
    """No byte (not even a ping) for the read timeout."""
    return LLMError(
        "llm_unavailable",
        f"The assistant stopped responding (nothing for {read_timeout:g} s); please try again.",
    )


def broke_off_error() -> LLMError:
    """The connection dropped while the reply streamed."""
    return LLMError(
        "llm_unavailable", "The connection to the assistant broke off; please try again."
    )


def timed_out_error() -> LLMError:
    """No answer within the request timeout, retries included."""
    return LLMError("llm_unavailable", "The assistant did not answer in time; please try again.")


def unreachable_error() -> LLMError:
    """The provider cannot be connected to at all."""
    return LLMError(
        "llm_unavailable", "The assistant cannot be reached right now; please try again."
    )
