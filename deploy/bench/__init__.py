"""Side-by-side benchmark: the hub against python-socketio and a bare aiohttp broadcaster.

Run ``python -m deploy.bench.compare`` from the repository root (see deploy/README.md).
"""
