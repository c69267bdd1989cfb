"""Waiting between tries at a platform that cannot be reached: doubling from `first` up to `cap` seconds, so a
short outage costs seconds and a long one costs one line a minute in the log. Tests pass small delays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float = 2.0
    cap: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try `attempt + 1` (attempt 0: after the first failure)."""
        return min(self.cap, self.first * self.factor ** min(attempt, 32))
