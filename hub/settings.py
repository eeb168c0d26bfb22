"""Every setting of the hub, read from the environment (prefix ``HUB_``) and checked at start."""

from __future__ import annotations

import logging
import os
import re
import secrets
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hub.protocol import ROOM_GRANT_RE

log = logging.getLogger(__name__)

LLMName = Literal["echo", "anthropic", "openai"]

MIN_SECRET_BYTES = 32
"""Shorter HS256 secrets can be brute-forced offline from a single token."""
_HIDDEN = ("secret", "api_key", "openai_api_key", "metrics_key")
"""Settings whose value is never echoed in an error message."""


class SettingsError(Exception):
    """A setting has a value the hub cannot run with; the message names it and says why."""


class Settings(BaseSettings):
    """The hub's configuration; the README's settings table documents each field."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    broker_url: str = "memory://"
    redis_prefix: str = Field("hub", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    secret: SecretStr | None = None
    guest_login: bool = True
    allowed_origins: Annotated[list[str], NoDecode] = []
    api_key: SecretStr | None = None
    token_ttl: int = Field(7 * 24 * 3600, gt=0)
    token_max_ttl: int = Field(30 * 24 * 3600, gt=0)
    metrics_key: SecretStr | None = None

    hello_timeout: float = Field(10.0, gt=0)
    header_timeout: float = Field(15.0, gt=0)
    body_timeout: float = Field(15.0, gt=0)
    heartbeat: float = Field(20.0, gt=0)
    max_frame: int = Field(65536, ge=1024)
    max_text: int = Field(8000, ge=1)
    history_max: int = Field(1000, ge=10)
    outbound_queue: int = Field(512, ge=8)
    rate: float = Field(1.0, gt=0)
    rate_burst: int = Field(10, ge=1)
    login_rate: float = Field(0.2, gt=0)
    login_burst: int = Field(20, ge=1)
    trusted_proxies: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    max_connections_per_user: int = Field(50, ge=1)
    max_connections_per_ip: int = Field(200, ge=1)
    max_replies_per_user: int = Field(2, ge=1)
    max_replies_per_room: int = Field(3, ge=1)
    max_replies_per_worker: int = Field(32, ge=1)
    daily_tokens: int = Field(0, ge=0)
    guest_data_ttl: int = Field(7 * 24 * 3600, gt=0)
    guest_rooms: Annotated[list[str], NoDecode] = ["lobby"]
    max_rooms_per_user: int = Field(100, ge=1)
    room_create_rate: float = Field(0.01, gt=0)
    room_create_burst: int = Field(10, ge=1)
    presence_ttl: float = Field(30.0, gt=0)
    worker_ttl: float = Field(2.5, gt=0)
    takeover: bool = True
    presence_interval: float = Field(1.0, gt=0)
    room_rate: float = Field(2.0, gt=0)
    room_burst: int = Field(10, ge=1)
    outbound_bytes: int = Field(4 * 1024 * 1024, ge=65536)
    history_bytes: int = Field(512 * 1024, ge=16384)
    drain_timeout: float = Field(10.0, gt=0)
    worker_id: str = ""

    llm: LLMName | None = None
    echo_delay: float = Field(0.05, ge=0)
    delta_interval: float = Field(0.04, ge=0)
    context_messages: int = Field(200, ge=1)

    # A current Claude model; HUB_ANTHROPIC_MODEL picks another (claude-sonnet-4-5 retires 2026-11-30).
    anthropic_model: str = "claude-sonnet-5-5"
    system_prompt: str = "You are a helpful assistant in a chat hub. Answer concisely in Markdown."
    max_tokens: int = Field(1024, ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    llm_timeout: float = Field(60.0, gt=0)
    llm_read_timeout: float = Field(30.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10)
    context_tokens: int = Field(50_000, ge=100)

    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_model: str = "llama3.1"
    openai_api_key: SecretStr | None = None

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("guest_rooms", mode="before")
    @classmethod
    def _split_rooms(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for grant in value:
                if not isinstance(grant, str) or not ROOM_GRANT_RE.fullmatch(grant):
                    raise ValueError(
                        f"{grant!r} is not a room name (a-z 0-9 _ -), a prefix ending in '*', or '*'"
                    )
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes: a short secret can be guessed "
                "offline from any token; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "unix://")
        clusters = ("redis+cluster://", "rediss+cluster://")
        if not value.startswith(schemes + clusters):
            raise ValueError(
                "must start with memory://, redis://, rediss://, unix:// or, for a Redis "
                "Cluster, redis+cluster:// or rediss+cluster:// (host:port,host:port,...)"
            )
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.token_ttl > self.token_max_ttl:
            raise ValueError(
                f"HUB_TOKEN_TTL ({self.token_ttl}) must not exceed HUB_TOKEN_MAX_TTL "
                f"({self.token_max_ttl})"
            )
        if self.llm is None:
            self.llm = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "echo"
        if not self.worker_id:
            self.worker_id = f"{self.host}:{self.port}"
        return self

    @property
    def llm_name(self) -> LLMName:
        """The chosen assistant, resolved at validation."""
        assert self.llm is not None
        return self.llm

    def secret_value(self) -> str:
        """The token secret; ``ensure_secret`` has filled it by the time the app runs."""
        assert self.secret is not None, "call ensure_secret() first"
        return self.secret.get_secret_value()

    def ensure_secret(self) -> None:
        """Use a random per-process secret when none is set, and say what that costs."""
        if self.secret is None:
            self.secret = SecretStr(secrets.token_urlsafe(32))
            log.warning(
                "HUB_SECRET is not set: using a random secret for this process. Tokens will "
                "not survive a restart and will not work across workers; set HUB_SECRET."
            )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = "_".join(str(p) for p in err["loc"])
            name = "HUB_" + field.upper() if field else "settings"
            lines.append(f"{name}: {err['msg']}{_shown(field, err.get('input'))}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


def _shown(field: str, value: object) -> str:
    """The rejected value for an error message, without secrets or URL passwords."""
    if not field or isinstance(value, dict):
        return ""
    if field in _HIDDEN:
        return " (value hidden)"
    return f" (got {redact_url(str(value))!r})" if isinstance(value, str) else f" (got {value!r})"


def redact_url(url: str) -> str:
    """A URL with any password replaced by ``***``, for logs and messages."""
    return re.sub(r"[^/@]*@", "***@", url, count=1)
