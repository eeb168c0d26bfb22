"""Every Redis key and pub/sub channel of the hub, built in one place from one prefix.

Keys that one Lua script touches together carry the channel in a ``{...}`` hash tag, so they
share a Redis Cluster slot; so does the channel's pub/sub name, ready for sharded pub/sub.
"""

from __future__ import annotations


def millis(seconds: float) -> int:
    """A TTL or timeout in the milliseconds Redis takes; never 0, which would mean no expiry."""
    return max(1, round(seconds * 1000))


class RedisNames:
    """Names of the hub's Redis keys and pub/sub channels under ``prefix``."""

    __slots__ = ("_pub_head", "prefix")

    def __init__(self, prefix: str = "hub") -> None:
        self.prefix = prefix
        self._pub_head = f"{prefix}:pub:{{"

    def pub(self, topic: str) -> str:
        """The pub/sub channel of a topic."""
        return f"{self._pub_head}{topic}}}"

    def topic_of(self, name: str) -> str | None:
        """The topic a pub/sub channel name carries, or None when it is not one of ours."""
        if name.startswith(self._pub_head) and name.endswith("}"):
            return name[len(self._pub_head) : -1]
        return None

    def log(self, channel: str) -> str:
        """The Stream holding a channel's messages."""
        return f"{self.prefix}:log:{{{channel}}}"

    def meta(self, channel: str) -> str:
        """Hash beside a log: ``epoch`` (first id of this incarnation) and ``trimmed`` (highest
        id trimmed away)."""
        return f"{self.prefix}:meta:{{{channel}}}"

    def ref(self, channel: str, dedupe: str) -> str:
        """Id stored under a dedupe key, so a retried send is stored once."""
        return f"{self.prefix}:ref:{{{channel}}}:{dedupe}"

    def inflight(self, channel: str) -> str:
        """Hash of a channel's replies in flight: reply id → JSON ``[worker, meta]``."""
        return f"{self.prefix}:inflight:{{{channel}}}"

    def deltas(self, channel: str, reply: str) -> str:
        """List of a reply's deltas so far; ``reply=""`` gives the prefix Lua appends ids to."""
        return f"{self.prefix}:deltas:{{{channel}}}:{reply}"

    def workers(self) -> str:
        """Hash of every worker's last heartbeat: worker → ms (Redis clock)."""
        return f"{self.prefix}:workers"

    def worker_replies(self, worker: str) -> str:
        """Set of a worker's replies in flight, ``reply|channel``, for the sweeper."""
        return f"{self.prefix}:wreplies:{{{worker}}}"

    def reply(self, reply: str) -> str:
        """Channel of a reply, so a stop request can find the reply without knowing it."""
        return f"{self.prefix}:reply:{reply}"

    def members(self, room: str) -> str:
        """Hash of a room's members: user id → display name."""
        return f"{self.prefix}:members:{room}"

    def rooms(self, user_id: str) -> str:
        """Set of rooms a user is a member of."""
        return f"{self.prefix}:rooms:{user_id}"

    def online(self, room: str) -> str:
        """Sorted set (all scores 0, read by lex range) of the online members' sort keys."""
        return f"{self.prefix}:online:{{room:{room}}}"

    def holders(self, room: str) -> str:
        """Hash beside ``online``: user id → ``workers holding the user|sort key``."""
        return f"{self.prefix}:holders:{{room:{room}}}"

    def held(self, room: str, worker: str) -> str:
        """Set of the users one worker holds online in a room (swept if the worker dies)."""
        return f"{self.prefix}:held:{{room:{room}}}:{worker}"

    def worker_rooms(self, worker: str) -> str:
        """Set of the rooms where a worker holds users online."""
        return f"{self.prefix}:wrooms:{{worker:{worker}}}"

    def worker_slots(self, worker: str) -> str:
        """Set of the limit slots a worker holds without a lease to renew (``key\\nholder``)."""
        return f"{self.prefix}:wslots:{{worker:{worker}}}"

    def rate(self, key: str) -> str:
        """Hash holding a token bucket: ``tokens`` and ``ts`` (s, Redis clock)."""
        return f"{self.prefix}:rate:{key}"

    def ticket(self, key: str) -> str:
        """A single-use ticket (one key, read and deleted in one GETDEL)."""
        return f"{self.prefix}:ticket:{key}"

    def slots(self, key: str) -> str:
        """Sorted set of a limit's holders scored by lease expiry (ms, Redis clock)."""
        return f"{self.prefix}:slots:{{{key}}}"

    def counter(self, key: str) -> str:
        """An integer that expires a fixed time after it was created (a day's token use)."""
        return f"{self.prefix}:count:{{{key}}}"

    def mark(self, key: str) -> str:
        """A small value every worker reads (a user's revocation time)."""
        return f"{self.prefix}:mark:{{{key}}}"
