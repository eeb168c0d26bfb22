"""Fixtures for the provider tests: loopback fakes, and no real credentials in reach."""

from __future__ import annotations

import pytest

from tests.support.fake_anthropic import fake_anthropic
from tests.support.fake_openai import fake_openai

__all__ = ["fake_anthropic", "fake_openai"]

SDK_ENVIRONMENT = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CUSTOM_HEADERS",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


@pytest.fixture(autouse=True)
def no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real key or endpoint must never be used by a test."""
    for name in SDK_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
