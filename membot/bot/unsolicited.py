"""Limits on what reaches a user unasked: the messages of timed heartbeats and reflections (wakeups.UNSOLICITED).
A reminder is not limited: the user asked for it, at that time.

- **Quiet hours** (MEMBOT_QUIET_HOURS, e.g. "22-08"), in the user's time zone: a heartbeat or reflection that
  falls due in them is put off to their end (the scheduler moves it; nothing runs meanwhile).
- **A daily cap** (MEMBOT_UNSOLICITED_PER_DAY) on the messages such steps deliver, counted per user and local day
  on the agent's row (`wakeups.take_unsolicited`). Once it is reached the steps still run, and what they would
  send is logged, not delivered. Running them keeps what they are for: a heartbeat or reflection mostly tidies
  memory, and that work is worth as much on the fourth heartbeat of a day as on the first; the cost of running
  is bounded by the token quota, the cap bounds the user's attention. A skipped step would also leave the agent
  believing nothing happened, whereas a withheld message stays in its recall like any it sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from membot.agent.events import AssistantMessage, DraftDropped, ErrorMessage, Event, ReplyDraft

log = logging.getLogger(__name__)

_SPAN = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?$")


def _time(hour: str, minute: str | None) -> time | None:
    h, m = int(hour), int(minute or 0)
    if h == 24 and m == 0:
        return time(0, 0)
    return time(h, m) if h < 24 and m < 60 else None


@dataclass(frozen=True)
class QuietHours:
    """A daily span of local time, from `start` to `end`; it wraps past midnight when `end` <= `start`."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """'22-08' or '22:30-07:15'; ValueError with what is wrong."""
        match = _SPAN.match(text.strip())
        start = _time(match.group(1), match.group(2)) if match else None
        end = _time(match.group(3), match.group(4)) if match else None
        if start is None or end is None:
            raise ValueError(f"{text!r} is not a span of hours; write it as 22-08 or 22:30-07:00")
        if start == end:
            raise ValueError(f"{text!r} starts and ends at the same time; leave it unset for no quiet hours")
        return cls(start, end)

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def end_after(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """If `now` (naive UTC) falls in these hours in zone `tz`, their end (naive UTC); else None."""
        local = now.replace(tzinfo=UTC).astimezone(tz)
        if not self.contains(local.time().replace(tzinfo=None)):
            return None
        day = local.date() if local.time().replace(tzinfo=None) < self.end else local.date() + timedelta(days=1)
        end = datetime.combine(day, self.end, tzinfo=tz)
        return end.astimezone(UTC).replace(tzinfo=None)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


async def capped(events: AsyncIterator[Event], allow: Callable[[], Awaitable[bool]], whom: str) -> AsyncIterator[Event]:
    """An unsolicited step's events, each message for the user delivered only if `allow()` grants it (it counts
    it against the day's cap); the rest is logged. Drafts are left out, so no text shows before its count: the
    final AssistantMessage is posted whole."""
    async with aclosing(events) as steps:
        async for event in steps:
            if isinstance(event, AssistantMessage | ErrorMessage):
                if not await allow():
                    log.info("not delivered to %s (today's unsolicited messages are used up): %s", whom, event.text)
                    continue
                if getattr(event, "draft", None) is not None:
                    event = replace(event, draft=None)
            elif isinstance(event, ReplyDraft | DraftDropped):  # a streamed draft of a reply
                continue
            yield event
