"""Fixtures shared by the whole suite: a clean environment and a hub on a real socket."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from hub.auth import mint_token
from hub.settings import Settings
from hub.web.app import create_app
from tests.support.redis_server import redis_server_fixture
from tests.support.wsclient import WsClient, connect

shared_redis = redis_server_fixture("session", name="shared_redis")

SECRET = "test-secret-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def _clean_env() -> Iterator[None]:
    """No test sees the developer's HUB_* settings or a real API key."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(("HUB_", "ANTHROPIC_", "OPENAI_"))}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@dataclass
class HubUnderTest:
    """A hub app on a real port, with helpers to sign users in."""

    server: TestServer
    settings: Settings
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))[:-1]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def token(self, user_id: str, name: str | None = None) -> str:
        return mint_token(self.settings.secret_value(), user_id, name or user_id.title(), 3600)

    async def connect(
        self, user_id: str, resume: dict[str, str] | None = None, **headers: str
    ) -> WsClient:
        return await connect(self.session, self.ws_url, self.token(user_id), resume, **headers)

    @property
    def app(self) -> Any:
        return self.server.app


def make_settings(**overrides: Any) -> Settings:
    """Fast settings for tests: short delays, a fixed secret, echo."""
    values: dict[str, Any] = {
        "secret": SECRET,
        "llm": "echo",
        "echo_delay": 0.002,
        "delta_interval": 0.01,
        "rate": 100.0,
        "rate_burst": 100,
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)


HubFactory = Callable[..., Awaitable[HubUnderTest]]


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Every hub test runs on the embedded broker and on a real redis-server."""
    if request.param == "memory":
        return "memory://"
    server = request.getfixturevalue("shared_redis")
    return str(server.url)


@pytest.fixture
async def start_hub(broker_url: str) -> AsyncIterator[HubFactory]:
    """Start hubs on real sockets; all are shut down (drained and cleaned) after the test.

    On Redis each hub gets a key prefix of its own, so tests never see each other's data.
    """
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**overrides: Any) -> HubUnderTest:
        llm = overrides.pop("llm_instance", None)
        overrides.setdefault("broker_url", broker_url)
        overrides.setdefault("redis_prefix", "t" + uuid.uuid4().hex[:12])
        settings = make_settings(**overrides)
        app = create_app(settings, llm=llm) if llm else create_app(settings)
        server = TestServer(app)
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return HubUnderTest(server, settings, session)

    yield start
    for server, session in started:
        await session.close()
        await server.close()


@pytest.fixture
async def hub(start_hub: HubFactory) -> HubUnderTest:
    """One hub with default test settings."""
    return await start_hub()
