"""Per-user quotas: messages a minute and model tokens a day (UTC), counted on the agent's row in the database,
so that every process of the bot counts together (see agent/store/usage.py). A message over a quota is not
taken: the user is told which quota and when it frees up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session

from membot.agent.store.db import Database
from membot.agent.store.usage import take_message, this_minute, today, tokens_on
from membot.bot.errors import QuotaReached


def _in(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class Quotas:
    def __init__(self, db: Database, per_minute: int | None, tokens_per_day: int | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.per_minute = per_minute
        self.tokens_per_day = tokens_per_day
        self.clock = clock

    async def admit(self, agent_id: int) -> None:
        """Count a message of the agent's user; QuotaReached when it may not be taken."""
        if self.per_minute is None and self.tokens_per_day is None:
            return
        now = self.clock()
        refusal = await self.db.write(partial(self._check, agent_id, now))
        if refusal:
            raise QuotaReached(refusal)

    def _check(self, agent_id: int, now: datetime, session: Session) -> str | None:
        if self.tokens_per_day is not None and tokens_on(session, agent_id, today(now)) >= self.tokens_per_day:
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            return (f"You have used today's {self.tokens_per_day:,} tokens for your agent, so this message was not "
                    f"taken. The quota starts again at midnight UTC, in {_in(midnight - now)}.")
        if self.per_minute is not None and take_message(session, agent_id, this_minute(now)) > self.per_minute:
            wait = 60 - now.second
            return (f"You are sending messages faster than this bot allows ({self.per_minute} a minute), so this "
                    f"one was not taken. Send it again in {wait} s.")
        return None
