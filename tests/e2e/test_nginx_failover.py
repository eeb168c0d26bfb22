"""nginx with the shipped upstream parameters keeps taking new WebSockets after workers crashed.

Each worker is killed (-9) and started again in turn while long-lived WebSockets stay open
through nginx; then twenty new WebSockets must all be welcomed, by every worker. With
passive failure marking (``max_fails=1 fail_timeout=5s``) a worker that failed once was
probed with a single request per ``fail_timeout``, and a probe that is a WebSocket never ends,
so once every worker had failed once most new sockets got 502 "no live upstreams".
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from deploy.cluster import Cluster
from tests.e2e.conftest import ClusterFactory
from tests.e2e.support import WAIT, token

pytestmark = pytest.mark.slow


async def open_socket(
    session: aiohttp.ClientSession, cluster: Cluster, user: str
) -> tuple[aiohttp.ClientWebSocketResponse | None, str]:
    """A WebSocket through nginx, kept open: (socket, worker), or (None, "HTTP <status>")."""
    try:
        sock = await session.ws_connect(cluster.ws_url, timeout=aiohttp.ClientWSTimeout(WAIT))
    except aiohttp.WSServerHandshakeError as exc:
        return None, f"HTTP {exc.status}"
    await sock.send_json({"type": "hello", "token": token(cluster, user)})
    frame = await sock.receive_json(timeout=WAIT)
    assert frame["type"] == "welcome", frame
    return sock, str(frame["worker"])


async def test_new_websockets_reach_every_worker_after_each_crashed_once(
    fresh_cluster: ClusterFactory,
) -> None:
    cluster = fresh_cluster()
    socks: list[aiohttp.ClientWebSocketResponse] = []
    async with aiohttp.ClientSession() as session:
        try:
            for index in range(3):
                assert await asyncio.to_thread(cluster.kill_worker, index) == -9
                for n in range(3):  # one of these is refused by the dead worker: nginx notes it
                    sock, where = await open_socket(session, cluster, f"held{index}-{n}")
                    assert sock is not None, where
                    socks.append(sock)
                await asyncio.to_thread(cluster.start_worker, index)
            answers = []
            for n in range(20):
                sock, where = await open_socket(session, cluster, f"new{n}")
                answers.append(where)
                if sock is not None:
                    socks.append(sock)
            seen = Counter(answers)
            print(f"NGINX new websockets after three crashes: {dict(seen)}")
            assert not [a for a in answers if a.startswith("HTTP")], dict(seen)
            assert set(seen) == {"hub1", "hub2", "hub3"}, dict(seen)
        finally:
            for sock in socks:
                await sock.close()
