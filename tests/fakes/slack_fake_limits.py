"""Slack's Web API rate limits, as the fake enforces them (on by default; see :class:`SlackLimits`).

What real Slack does (https://docs.slack.dev/apis/web-api/rate-limits), and so what this does:

* Limits apply per method per app per workspace; each method has a tier: Tier 1 1+/min, Tier 2 20+/min,
  Tier 3 50+/min, Tier 4 100+/min, "sporadic"/"generous" bursts allowed. Here: a token bucket refilling at the
  tier's rate that holds a minute's worth.
* ``chat.postMessage`` is special: about one message per second per channel, short bursts allowed. Here: 1/s
  per channel with a burst of 3.
* Over the limit, Slack answers HTTP 429 with ``Retry-After: <whole seconds>`` and
  ``{"ok": false, "error": "ratelimited"}``; slack_sdk's RateLimitErrorRetryHandler sleeps that long and retries.

The method tiers come from each method's reference page (docs.slack.dev/reference/methods/<method>).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from tests.fakes.ratelimit import Clock, Counters, Limit, TokenBucket, ceil_seconds

TIER_1 = Limit(1, 60.0)
TIER_2 = Limit(20, 60.0)
TIER_3 = Limit(50, 60.0)
TIER_4 = Limit(100, 60.0)
POST_MESSAGE_PER_CHANNEL = Limit(1, 1.0, burst=3)

#: Method -> its limit; chat.postMessage's is per channel, every other one per workspace.
DEFAULT_METHOD_LIMITS: dict[str, Limit] = {
    "chat.postMessage": POST_MESSAGE_PER_CHANNEL,
    "chat.postEphemeral": TIER_4,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "conversations.info": TIER_3,
    "conversations.open": TIER_3,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
    "reactions.add": TIER_3,
    "users.info": TIER_4,
    "files.info": TIER_4,
    "files.upload": TIER_2,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "auth.test": TIER_4,  # "special": generous, hundreds a minute
    "api.test": TIER_4,
}

PER_CHANNEL = frozenset({"chat.postMessage"})


@dataclass
class Refusal:
    retry_after: int  # whole seconds, as the Retry-After header says


class SlackLimits:
    """The fake's limiter: ``FakeSlack(rate_limits=...)`` builds it, ``fake.limits`` is it.

    ``methods``: True = the defaults above; False = no limits; a mapping overrides single methods (a ``Limit``,
    or None for unlimited). Change them later with :meth:`set_method` / :attr:`enabled`.
    :attr:`counters` tally every call to a method the fake knows, per ``(method, channel or None)``: the
    channel for chat.postMessage (resolved: a user id counts as its DM), None for the others.
    """

    def __init__(self, methods: bool | Mapping[str, Limit | None] = True, *, clock: Clock = time.time) -> None:
        self.enabled = methods is not False
        self.clock = clock
        self.methods: dict[str, Limit] = dict(DEFAULT_METHOD_LIMITS)
        self.counters = Counters()
        self._buckets: dict[tuple[str, Hashable], TokenBucket] = {}
        if isinstance(methods, Mapping):
            for method, limit in methods.items():
                self.set_method(method, limit)

    def set_method(self, method: str, limit: Limit | None) -> None:
        if limit is None:
            self.methods.pop(method, None)
        else:
            self.methods[method] = limit
        for key in [k for k in self._buckets if k[0] == method]:
            del self._buckets[key]

    def reset(self) -> None:
        """Forget every bucket (full again) and the counters."""
        self._buckets.clear()
        self.counters.reset()

    def posts(self, channel: str | None = None) -> int:
        """chat.postMessage calls let through for ``channel`` (a resolved id, e.g. "D1"), or for all."""
        return self.counters.total("chat.postMessage", channel).allowed

    def limited(self, method: str | None = None, channel: str | None = None) -> int:
        """429s answered for ``method`` (None = any) and ``channel`` (None = any)."""
        return self.counters.total(method, channel).limited

    def check(self, method: str, channel: str | None) -> Refusal | None:
        """Count one call to ``method``; a Refusal if it is over the limit."""
        major = channel if method in PER_CHANNEL else None
        tally = self.counters.tally(method, major)
        limit = self.methods.get(method)
        if not self.enabled or limit is None:
            tally.allowed += 1
            return None
        bucket = self._buckets.setdefault((method, major), TokenBucket(limit))
        wait = bucket.take(self.clock())
        if wait is None:
            tally.allowed += 1
            return None
        tally.limited += 1
        return Refusal(ceil_seconds(wait))
