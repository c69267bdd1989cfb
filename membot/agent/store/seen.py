"""Platform events taken once across processes. Slack redelivers an event it thinks was lost, and behind a load
balancer the redelivery may reach another process of the bot: whichever process inserts the event's key first
handles it. Keys are kept for KEEP (redeliveries come within minutes), then forgotten."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from membot.agent.store.schema import SeenEventRow

KEEP = timedelta(hours=1)


def claim(session: Session, key: str, now: datetime) -> bool:
    """True for the first process to claim `key` (go ahead), False for any later claim (drop it)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = session.execute(insert(SeenEventRow).values(key=key[:200], seen_at=now).on_conflict_do_nothing())
    return added.rowcount == 1


def forget_old(session: Session, now: datetime) -> int:
    """Drop keys older than KEEP; how many."""
    return session.execute(delete(SeenEventRow).where(SeenEventRow.seen_at < now - KEEP)).rowcount
