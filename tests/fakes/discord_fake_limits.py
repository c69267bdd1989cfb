"""Discord's REST rate limits, as the fake enforces them (on by default; see :class:`DiscordLimits`).

What real Discord does, and so what this does (https://discord.com/developers/docs/topics/rate-limits):

* Per-route buckets, keyed by the route plus its top-level resource ("major parameter": ``channel_id``,
  ``guild_id``, or a webhook's id + token). Creating a message is 5 per 5 s per channel. Every response of a
  limited route carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds, float),
  ``-Reset-After`` (seconds, float) and ``-Bucket`` (an opaque id shared by every major value of the route).
* A global limit of 50 requests a second for the bot, which interaction callbacks and interaction webhooks
  are not subject to. Routes without a bucket of their own only have the global limit.
* A 429 answers ``{"message": "You are being rate limited.", "retry_after": <float s>, "global": <bool>}``
  with ``Retry-After``, ``X-RateLimit-Scope`` (``user`` for a route bucket, ``global``) and, for the global
  limit, ``X-RateLimit-Global: true``. Discord is behind Google's front end, so responses carry
  ``Via: 1.1 google``: discord.py takes a 429 without ``Via`` for a Cloudflare ban and raises at once.

Only the message-create limit is documented by number (and observed by every bot author); the others are
plausible values of the same order, good enough for a bot that mostly posts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.ratelimit import Clock, Counters, FixedWindow, Limit, ceil_seconds

GLOBAL_LIMIT = Limit(50, 1.0)

#: Route (method + path template under /api/v10, as discord.py names them) -> its bucket.
DEFAULT_ROUTE_LIMITS: dict[str, Limit] = {
    "POST /channels/{channel_id}/messages": Limit(5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": Limit(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": Limit(5, 1.0),  # deletes have a higher limit
    "GET /channels/{channel_id}": Limit(5, 5.0),
    "GET /channels/{channel_id}/messages": Limit(5, 5.0),
    "GET /channels/{channel_id}/messages/{message_id}": Limit(5, 5.0),
    "POST /channels/{channel_id}/typing": Limit(5, 5.0),
    "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": Limit(1, 0.25),
    "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": Limit(1, 0.25),
    "POST /users/@me/channels": Limit(5, 5.0),
    "POST /interactions/{interaction_id}/{token}/callback": Limit(5, 5.0),
    "POST /webhooks/{app_id}/{token}": Limit(5, 2.0),
    "GET /webhooks/{app_id}/{token}/messages/{message_id}": Limit(5, 2.0),
    "PATCH /webhooks/{app_id}/{token}/messages/{message_id}": Limit(5, 2.0),
    "DELETE /webhooks/{app_id}/{token}/messages/{message_id}": Limit(5, 2.0),
}

POST_MESSAGE = "POST /channels/{channel_id}/messages"

# Path parameters that make a bucket of their own (webhooks: id and token together).
_MAJOR_PARAMETERS = ("channel_id", "guild_id", "interaction_id", "app_id", "token")


def _not_global(route: str) -> bool:
    """Interaction responses and follow-ups are not subject to the global limit."""
    path = route.split(" ", 1)[1]
    return path.startswith(("/interactions/", "/webhooks/"))


def bucket_hash(route: str) -> str:
    return hashlib.md5(route.encode(), usedforsecurity=False).hexdigest()


@dataclass
class Verdict:
    """What the limiter decided for one request: headers to send, and a 429 body if it was refused."""

    route: str
    major: Hashable
    headers: dict[str, str]
    refused: dict[str, Any] | None = None  # the 429 JSON body


class DiscordLimits:
    """The fake's limiter: ``FakeDiscord(rate_limits=...)`` builds it, ``fake.limits`` is it.

    ``routes``: True = the defaults above; False = no limits at all (not even the global one); a mapping
    overrides the defaults per route (a ``Limit``, or None for no bucket). ``global_limit``: None disables it.
    Change them later with :meth:`set_route` / :attr:`global_limit` / :attr:`enabled`.
    :attr:`counters` tally every request per ``(route, major)``: ``allowed`` and ``limited`` (429s).
    """

    def __init__(
        self,
        routes: bool | Mapping[str, Limit | None] = True,
        *,
        global_limit: Limit | None = GLOBAL_LIMIT,
        clock: Clock = time.time,
    ) -> None:
        self.enabled = routes is not False
        self.clock = clock
        self.routes: dict[str, Limit] = dict(DEFAULT_ROUTE_LIMITS)
        self.global_limit = global_limit
        self.counters = Counters()
        self._buckets: dict[tuple[str, Hashable], FixedWindow] = {}
        self._global: FixedWindow | None = None
        if isinstance(routes, Mapping):
            for route, limit in routes.items():
                self.set_route(route, limit)

    def set_route(self, route: str, limit: Limit | None) -> None:
        """Give ``route`` (e.g. ``"POST /channels/{channel_id}/messages"``) a bucket, or none."""
        if limit is None:
            self.routes.pop(route, None)
        else:
            self.routes[route] = limit
        for key in [k for k in self._buckets if k[0] == route]:
            del self._buckets[key]

    def reset(self) -> None:
        """Forget every bucket (and the counters): as if all limits had just reset."""
        self._buckets.clear()
        self._global = None
        self.counters.reset()

    # ------------------------------------------------------------------ counting

    def posts(self, channel_id: int | None = None) -> int:
        """Messages created (not refused) in ``channel_id``, or in every channel."""
        return self.counters.total(POST_MESSAGE, None if channel_id is None else str(channel_id)).allowed

    def limited(self, route: str | None = None, major: Hashable = None) -> int:
        """429s answered on ``route`` (None = any) for ``major`` (e.g. ``str(channel_id)``; None = any)."""
        return self.counters.total(route, major).limited

    # ------------------------------------------------------------------ deciding

    def check(self, route: str, params: Mapping[str, str]) -> Verdict:
        """Count one request to ``route`` with path ``params``; say whether it may go through."""
        majors = tuple(params[p] for p in _MAJOR_PARAMETERS if p in params)
        major: Hashable = majors[0] if len(majors) == 1 else (majors or None)
        verdict = Verdict(route, major, {"Via": "1.1 google"})
        tally = self.counters.tally(route, major)
        if not self.enabled:
            tally.allowed += 1
            return verdict
        now = self.clock()
        if self.global_limit is not None and not _not_global(route):
            if self._global is None or self._global.limit != self.global_limit:
                self._global = FixedWindow(self.global_limit)
            wait = self._global.take(now)
            if wait is not None:
                tally.limited += 1
                self.counters.tally("global").limited += 1
                verdict.headers.update(
                    {
                        "Retry-After": str(ceil_seconds(wait)),
                        "X-RateLimit-Global": "true",
                        "X-RateLimit-Scope": "global",
                    }
                )
                verdict.refused = _body(wait, is_global=True)
                return verdict
        limit = self.routes.get(route)
        if limit is None:
            tally.allowed += 1
            return verdict
        bucket = self._buckets.setdefault((route, major), FixedWindow(limit))
        wait = bucket.take(now)
        reset_after = bucket.reset_after(now)
        verdict.headers.update(
            {
                "X-RateLimit-Limit": str(limit.count),
                "X-RateLimit-Remaining": str(bucket.remaining(now)),
                "X-RateLimit-Reset": f"{now + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": bucket_hash(route),
            }
        )
        if wait is None:
            tally.allowed += 1
            return verdict
        tally.limited += 1
        verdict.headers.update({"Retry-After": str(ceil_seconds(wait)), "X-RateLimit-Scope": "user"})
        verdict.refused = _body(wait, is_global=False)
        return verdict


def _body(wait: float, *, is_global: bool) -> dict[str, Any]:
    retry_after = max(round(wait, 3), 0.001)
    return {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
