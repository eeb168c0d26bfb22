"""Reading Server-Sent Events off an aiohttp response, field by field, as a browser would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Event:
    """One dispatched event: its name (``message`` when unnamed), id, data and retry."""

    event: str
    id: str | None
    data: str
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


async def next_event(resp: aiohttp.ClientResponse, timeout: float = 10.0) -> Event:
    """The next event with data (comments and empty blocks skipped); EOF is an AssertionError."""
    name, event_id, data, retry = "message", None, [], None
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), timeout)
        if not raw:
            raise AssertionError("the event stream ended")
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                return Event(name, event_id, "\n".join(data), retry)
            name, event_id, retry = "message", None, None
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data.append(value)
        elif field == "retry":
            retry = int(value)


async def events_until(
    resp: aiohttp.ClientResponse, event: str, limit: int = 500, **fields: Any
) -> list[Event]:
    """Events up to and including the first named ``event`` whose JSON data has ``fields``."""
    out: list[Event] = []
    for _ in range(limit):
        got = await next_event(resp)
        out.append(got)
        if got.event == event and all(got.json().get(k) == v for k, v in fields.items()):
            return out
    raise AssertionError(f"no {event} {fields} in {[e.event for e in out]}")
