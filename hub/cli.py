"""Command line: ``hub serve``, ``hub token``, ``hub bench``, ``hub chat``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from hub.auth import mint_token
from hub.broker import BrokerError, create_broker
from hub.core.identity import revoke_user
from hub.settings import Settings, SettingsError, load_settings

log = logging.getLogger("hub")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hub`` console script."""
    parser = argparse.ArgumentParser(prog="hub", description="Multi-user LLM chat hub.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one hub worker (settings from HUB_* variables)")
    serve.add_argument("--host", help="overrides HUB_HOST")
    serve.add_argument("--port", type=int, help="overrides HUB_PORT")
    token = sub.add_parser("token", help="mint a token with HUB_SECRET for a user")
    token.add_argument("--user", required=True, help="user id: 1-64 of A-Z a-z 0-9 _ . -")
    token.add_argument("--name", required=True, help="display name")
    token.add_argument("--ttl", type=int, help="seconds until it expires (default HUB_TOKEN_TTL)")
    token.add_argument(
        "--rooms", help="comma-separated rooms it may join: names, prefixes ending in '*'"
    )
    revoke = sub.add_parser(
        "revoke", help="void every token of a user issued until now and close its connections"
    )
    revoke.add_argument("--user", required=True, help="user id")
    bench = sub.add_parser("bench", help="load a running hub and report throughput and latency")
    bench.add_argument("--url", default="http://127.0.0.1:8080", help="hub base URL")
    bench.add_argument("--users", type=int, default=50)
    bench.add_argument("--messages", type=int, default=20, help="messages per user")
    bench.add_argument("--room", default="bench")
    bench.add_argument(
        "--interval", type=float, default=1.0, help="seconds between one user's sends (HUB_RATE!)"
    )
    bench.add_argument(
        "--metrics",
        action="append",
        metavar="URL",
        help="a worker's base URL for CPU and memory from its /metrics; repeat for each worker "
        "(default: --url)",
    )
    bench.add_argument(
        "--rooms", type=int, default=1, help="deal the users over this many rooms (ROOM0, ...)"
    )
    bench.add_argument(
        "--dm", action="store_true", help="each user talks in its own dm (with the assistant)"
    )
    chat = sub.add_parser("chat", help="chat from a terminal: type lines, watch replies stream")
    chat.add_argument("--url", default="http://127.0.0.1:8080", help="hub base URL")
    chat.add_argument("--room", help="join this room and talk there (default: private chat)")
    chat.add_argument("--token", help="your token (default $HUB_TOKEN; else a guest login)")
    chat.add_argument("--name", help="guest name when there is no token (default $USER)")
    args = parser.parse_args(argv)
    if args.command == "chat":
        return _chat(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        overrides: dict[str, object] = {}
        if args.command == "serve":
            if args.host:
                overrides["host"] = args.host
            if args.port is not None:
                overrides["port"] = args.port
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return asyncio.run(_serve(settings))
    if args.command == "token":
        if settings.secret is None:
            print("hub: set HUB_SECRET to the secret the hub runs with.", file=sys.stderr)
            return 2
        rooms = None if args.rooms is None else [r.strip() for r in args.rooms.split(",")]
        try:
            print(
                mint_token(
                    settings.secret_value(),
                    args.user,
                    args.name,
                    min(args.ttl or settings.token_ttl, settings.token_max_ttl),
                    rooms=rooms,
                )
            )
        except ValueError as exc:
            print(f"hub: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "revoke":
        return asyncio.run(_revoke(settings, args.user))
    from hub.bench import BenchError, run_bench

    try:
        return asyncio.run(
            run_bench(
                args.url,
                args.users,
                args.messages,
                args.room,
                args.interval,
                args.metrics,
                rooms=max(1, args.rooms),
                dm=args.dm,
            )
        )
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2


async def _revoke(settings: Settings, user_id: str) -> int:
    """Set the user's revocation mark in the shared broker and close its connections."""
    if settings.broker_url.startswith("memory://"):
        print(
            "hub: revocation needs the shared broker (HUB_BROKER_URL=redis://...); a hub on "
            "the embedded broker forgets every session when restarted with a new HUB_SECRET.",
            file=sys.stderr,
        )
        return 2
    broker = create_broker(settings)
    try:
        at = await revoke_user(broker, user_id, settings.token_max_ttl)
    except BrokerError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    finally:
        await broker.close()
    print(f"Tokens of {user_id} issued until {at} (Unix time) are void; its connections close.")
    return 0


async def _serve(settings: Settings) -> int:
    """Run until SIGINT or SIGTERM, then drain: clients are told to reconnect elsewhere (1012)."""
    from hub.web.access_log import AccessLogger
    from hub.web.app import create_app
    from hub.web.security import runner_options

    app = create_app(settings)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.drain_timeout,
        handle_signals=False,
        access_log_class=AccessLogger,
        **runner_options(settings),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        print(
            f"hub: cannot listen on {settings.host}:{settings.port}: {exc.strerror}. "
            "Set HUB_PORT (or --port) to a free port.",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 2
    port = settings.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    print(
        f"Chat hub running at http://{host}:{port}/  (worker {settings.worker_id}, "
        f"assistant {settings.llm_name}, broker {settings.broker_url.split('@')[-1]})",
        flush=True,
    )
    await stop.wait()
    log.info("draining: closing connections with 1012 (at most %ss)", settings.drain_timeout)
    try:
        await asyncio.wait_for(runner.cleanup(), settings.drain_timeout + 5)
    except TimeoutError:
        log.error("drain took longer than %ss; exiting anyway", settings.drain_timeout)
    return 0


def _chat(args: argparse.Namespace) -> int:
    """``hub chat``: needs no settings of its own, only a hub to talk to and a token."""
    from hub.client import HubClientError
    from hub.terminal import guest_token, run_chat

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def chat() -> int:
        token = args.token or os.environ.get("HUB_TOKEN")
        if not token:
            name = args.name or os.environ.get("USER") or "guest"
            try:
                token = await guest_token(args.url, name)
            except (HubClientError, OSError, ValueError) as exc:
                print(
                    f"hub chat: no token and no guest login at {args.url}: {exc}", file=sys.stderr
                )
                return 2
        return await run_chat(args.url, token, args.room)

    try:
        return asyncio.run(chat())
    except KeyboardInterrupt:
        return 0
