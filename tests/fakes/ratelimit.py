"""Rate-limit bookkeeping shared by the Discord and Slack fakes: limits, buckets, a clock, and counters.

Two bucket shapes, one per platform:

* :class:`FixedWindow` (Discord): ``count`` requests, then nothing until the window that opened with the first
  request ends; ``remaining`` and ``reset`` are what the ``X-RateLimit-*`` headers report.
* :class:`TokenBucket` (Slack): a sustained ``count / per`` requests a second with room for a burst of ``burst``
  requests, which is how Slack describes its tiers ("20+ per minute ... occasional bursts") and
  ``chat.postMessage`` ("1 per second per channel, short bursts allowed").

Time comes from a clock (``time.time`` by default, epoch seconds): pass a :class:`ManualClock` to a fake to run
the limits without waiting (``clock.advance(5)``). SDK clients still sleep in real time on a 429, so tests that
drive an SDK keep real time and lower the limits instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class ManualClock:
    """A clock that only moves when told to; starts at the real time so epoch headers stay plausible."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Limit:
    """``count`` requests per ``per`` seconds; ``burst`` (token buckets only) defaults to ``count``."""

    count: int
    per: float
    burst: int | None = None


@dataclass
class FixedWindow:
    limit: Limit
    started: float | None = None
    used: int = 0

    def _roll(self, now: float) -> None:
        if self.started is not None and now >= self.started + self.limit.per:
            self.started, self.used = None, 0

    def take(self, now: float) -> float | None:
        """Count one request; None if allowed, else seconds until the window resets (nothing counted)."""
        self._roll(now)
        if self.used >= self.limit.count:
            assert self.started is not None
            return self.started + self.limit.per - now
        if self.started is None:
            self.started = now
        self.used += 1
        return None

    def remaining(self, now: float) -> int:
        self._roll(now)
        return self.limit.count - self.used

    def reset_after(self, now: float) -> float:
        self._roll(now)
        return self.limit.per if self.started is None else self.started + self.limit.per - now


@dataclass
class TokenBucket:
    limit: Limit
    tokens: float = field(init=False)
    updated: float | None = None

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)

    @property
    def capacity(self) -> int:
        return self.limit.burst if self.limit.burst is not None else self.limit.count

    @property
    def rate(self) -> float:
        return self.limit.count / self.limit.per  # tokens a second

    def take(self, now: float) -> float | None:
        """Spend one token; None if there was one, else seconds until there is (nothing spent)."""
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate


@dataclass
class Tally:
    """What one bucket key saw: requests let through and requests answered 429."""

    allowed: int = 0
    limited: int = 0

    @property
    def limited_per_100(self) -> float:
        """429s per 100 requests let through (0 when nothing went through yet)."""
        return 100 * self.limited / self.allowed if self.allowed else 0.0


class Counters:
    """Tallies per ``(route or method, major key)``; ``major`` is e.g. the channel id, or None for the route."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, Hashable], Tally] = {}

    def tally(self, route: str, major: Hashable = None) -> Tally:
        return self.tallies.setdefault((route, major), Tally())

    def total(self, route: str | None = None, major: Hashable = None) -> Tally:
        """Sum over keys matching ``route`` (None = any) and ``major`` (None = any)."""
        out = Tally()
        for (r, m), t in self.tallies.items():
            if (route is None or r == route) and (major is None or m == major):
                out.allowed += t.allowed
                out.limited += t.limited
        return out

    def reset(self) -> None:
        self.tallies.clear()


def ceil_seconds(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header, never 0 while still limited."""
    return max(1, math.ceil(seconds - 1e-9))
