"""Scheduled wake-ups of agents, in SQL: reminders an agent set itself (the schedule_wakeup function), the
next timed heartbeat of each agent (MEMBOT_HEARTBEAT_MINUTES) and its reflection once a conversation rests
(MEMBOT_REFLECT_AFTER_MINUTES). The scheduler (bot/scheduler.py) fires them.

Each claim of a wake-up goes to one process, whatever the number of processes: `claim` is a compare-and-set
UPDATE on the row's `attempts` (one process's rowcount is 1, every other's 0). The scheduler marks the wake-up
`finished` when its step ended, delivered or not. A claim left unfinished for STALE_CLAIM (its process died or
was stopped mid-step) may be claimed once more, so a reminder is not lost to a crash; never a third time
(MAX_ATTEMPTS), so a wake-up whose step kills its process cannot loop. So a wake-up whose run finished is never
fired again; one whose first run died after it had sent something may be seen twice: a rare duplicate is better
than a reminder lost.

Times are naive UTC, as everywhere in the schema. Relative and local times ("in 2 hours", "tomorrow 9:00") are
read in the user's time zone (`agents.timezone`, IANA, UTC when unknown).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from membot.agent.store.schema import AgentRow, IdentityRow, WakeupRow

REMINDER, HEARTBEAT, REFLECTION = "reminder", "heartbeat", "reflection"
#: Kinds the user did not ask for: held back in quiet hours, their messages capped per day (bot/unsolicited.py).
UNSOLICITED = frozenset({HEARTBEAT, REFLECTION})
MAX_PENDING = 20  # reminders per agent
MIN_LEAD = timedelta(minutes=1)
MAX_AHEAD = timedelta(days=366)
MAX_NOTE_CHARS = 500
#: Fired wake-ups are kept this long (for looking back), then dropped.
KEEP_FIRED = timedelta(days=7)
#: A claim this old whose step never finished belongs to a process that died: longer than any bounded step
#: (MEMBOT_MAX_CHAIN model calls, each with its timeout and retries, plus the 5 minutes a lease waiter waits).
STALE_CLAIM = timedelta(minutes=30)
#: Claims of one wake-up at most: the first, and one retry after a process died mid-step.
MAX_ATTEMPTS = 2

EXAMPLES = "an ISO time (2025-05-01T09:00), 'in 2 hours', 'in 30 minutes', 'tomorrow 9:00' or 'today 18:30'"


class WakeupRefused(ValueError):
    """A wake-up that may not be scheduled; the message says why, for the model or the user."""


# ----- in-process news: a scheduler sleeping in this process wakes early for a new wake-up (Engine.wakeups) --------------------

class Signal:
    """One per engine (no process-wide state): told when a wake-up is scheduled, it calls its listeners."""

    def __init__(self) -> None:
        self._listeners: set[Callable[[], None]] = set()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` whenever a wake-up is scheduled; returns the function that stops it."""
        self._listeners.add(callback)
        return lambda: self._listeners.discard(callback)

    def announce(self) -> None:
        for callback in list(self._listeners):
            callback()


# ----- times ----------------------------------------------------------------------------------------------------


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name` (UTC for None); WakeupRefused if there is no such zone."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise WakeupRefused(
            f"Unknown time zone {name[:64]!r}; give an IANA name such as Europe/Paris or America/New_York."
        ) from None


def zone_or_utc(name: str | None) -> ZoneInfo:
    """The stored zone `name`, UTC if it is unknown here (it was checked when saved, on maybe another system)."""
    try:
        return zone(name)
    except WakeupRefused:
        return ZoneInfo("UTC")


def local_text(due_utc: datetime, tz: ZoneInfo) -> str:
    """A naive UTC time as the user reads it: '2025-05-01 09:00 Europe/Paris'."""
    return f"{due_utc.replace(tzinfo=UTC).astimezone(tz):%Y-%m-%d %H:%M} {tz.key}"


_UNITS = {
    "minute": 60, "minutes": 60, "min": 60, "mins": 60, "m": 60,
    "hour": 3600, "hours": 3600, "hr": 3600, "hrs": 3600, "h": 3600,
    "day": 86400, "days": 86400, "d": 86400,
    "week": 604800, "weeks": 604800, "w": 604800,
    "second": 1, "seconds": 1, "sec": 1, "secs": 1, "s": 1,
}
_AMOUNT = r"(\d+(?:\.\d+)?|\b(?:half an?|an?|one)\b)"
_PART = re.compile(rf"{_AMOUNT}\s*({'|'.join(sorted(_UNITS, key=len, reverse=True))})\b")
_RELATIVE = re.compile(rf"^in\s+((?:{_AMOUNT}\s*[a-z]+\s*(?:,|and)?\s*)+)$")
_CLOCK = re.compile(r"^(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")
_DAY = re.compile(r"^(today|tonight|tomorrow)(?:\s+(?:at\s+)?(.+))?$")


def _amount(word: str) -> float:
    if word in ("a", "an", "one"):
        return 1.0
    if word.startswith("half"):
        return 0.5
    return float(word)


def _clock(text: str) -> tuple[int, int] | None:
    match = _CLOCK.match(text.strip())
    if not match:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if match.group(3):
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match.group(3) == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def parse_when(when: str, now: datetime, tz: ZoneInfo) -> datetime:
    """`when` as naive UTC. `now` is naive UTC; times without a zone are in `tz`. WakeupRefused if unreadable."""
    text = " ".join((when or "").lower().split())
    local_now = now.replace(tzinfo=UTC).astimezone(tz)
    if relative := _RELATIVE.match(text):
        seconds = 0.0
        for amount, unit in _PART.findall(relative.group(1)):
            seconds += _amount(amount) * _UNITS[unit]
        if seconds > 0:
            return now + timedelta(seconds=seconds)
    elif day := _DAY.match(text):
        which, at = day.groups()
        clock = _clock(at) if at else ((20, 0) if which == "tonight" else None)
        if clock is not None:
            date = local_now.date() + timedelta(days=1 if which == "tomorrow" else 0)
            moment = datetime(date.year, date.month, date.day, *clock, tzinfo=tz)
            return moment.astimezone(UTC).replace(tzinfo=None)
    elif (clock := _clock(text)) is not None:  # a bare time of day: its next occurrence
        moment = local_now.replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
        if moment <= local_now:
            moment = (local_now + timedelta(days=1)).replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
        return moment.astimezone(UTC).replace(tzinfo=None)
    else:
        try:
            moment = datetime.fromisoformat(when.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
            return moment.astimezone(UTC).replace(tzinfo=None)
    raise WakeupRefused(f"Could not read the time {when[:80]!r}; give {EXAMPLES}.")


# ----- units of work (each a function over a Session, for Database.write / read) --------------------------------


def agent_zone(session: Session, agent_id: int) -> str | None:
    return session.scalar(select(AgentRow.timezone).where(AgentRow.id == agent_id))


def user_zone(session: Session, agent_id: int) -> ZoneInfo:
    """The time zone the agent knows its user in (UTC until it learns one)."""
    return zone_or_utc(agent_zone(session, agent_id))


def set_zone(session: Session, agent_id: int, name: str) -> None:
    session.execute(update(AgentRow).where(AgentRow.id == agent_id).values(timezone=name))


def add_reminder(session: Session, agent_id: int, due_at: datetime, note: str, now: datetime) -> int:
    """Insert a reminder within the limits (WakeupRefused says which one it breaks); its id."""
    note = " ".join(note.split())
    if not note:
        raise WakeupRefused("The note is empty; say what the reminder is for.")
    if len(note) > MAX_NOTE_CHARS:
        raise WakeupRefused(f"The note is {len(note)} characters; keep it under {MAX_NOTE_CHARS}.")
    if due_at < now + MIN_LEAD:
        past = "in the past" if due_at <= now else "less than a minute away"
        raise WakeupRefused(
            f"That time is {past}; a reminder must be at least 1 minute ahead. Tell the user now instead, or "
            f"pick a later time."
        )
    if due_at > now + MAX_AHEAD:
        raise WakeupRefused("That is more than a year ahead; pick a nearer time.")
    pending = session.scalar(
        select(func.count()).select_from(WakeupRow).where(
            WakeupRow.agent_id == agent_id, WakeupRow.kind == REMINDER, WakeupRow.fired_at.is_(None)
        )
    )
    if pending >= MAX_PENDING:
        raise WakeupRefused(
            f"You already have {pending} pending reminders, the most allowed; the user can list and cancel them "
            f"with /reminders, or wait until some have fired."
        )
    row = WakeupRow(agent_id=agent_id, kind=REMINDER, due_at=due_at, note=note, created_at=now)
    session.add(row)
    session.flush()
    return row.id


def _drop_pending(session: Session, agent_id: int, kind: str) -> None:
    session.execute(delete(WakeupRow).where(
        WakeupRow.agent_id == agent_id, WakeupRow.kind == kind, WakeupRow.fired_at.is_(None)
    ))


def set_heartbeat(session: Session, agent_id: int, due_at: datetime, now: datetime) -> datetime | None:
    """Make `due_at` the agent's one pending timed heartbeat (any earlier pending one is dropped), unless its user
    turned timed heartbeats off (/heartbeats off); the time set, or None."""
    _drop_pending(session, agent_id, HEARTBEAT)
    if not session.scalar(select(AgentRow.heartbeats_on).where(AgentRow.id == agent_id)):
        return None
    session.add(WakeupRow(agent_id=agent_id, kind=HEARTBEAT, due_at=due_at, note="", created_at=now))
    return due_at


def set_reflection(session: Session, agent_id: int, due_at: datetime, now: datetime) -> None:
    """Make `due_at` the agent's one pending reflection: each message moves it on, so it fires once the
    conversation has rested, once per quiet spell (a fired one is not set again until the user writes)."""
    _drop_pending(session, agent_id, REFLECTION)
    session.add(WakeupRow(agent_id=agent_id, kind=REFLECTION, due_at=due_at, note="", created_at=now))


def set_heartbeats_on(session: Session, agent_id: int, on: bool) -> None:
    """The user's choice (/heartbeats on|off); off also drops the pending heartbeat."""
    session.execute(update(AgentRow).where(AgentRow.id == agent_id).values(heartbeats_on=on))
    if not on:
        _drop_pending(session, agent_id, HEARTBEAT)


@dataclass(frozen=True)
class HeartbeatState:
    """What /heartbeats shows: the user's choice, the next one due and any pause the agent asked for."""

    on: bool
    next_due: datetime | None
    paused_until: datetime | None
    zone: ZoneInfo


def heartbeat_state(session: Session, agent_id: int) -> HeartbeatState:
    row = session.execute(select(AgentRow.heartbeats_on, AgentRow.heartbeats_paused_until, AgentRow.timezone)
                          .where(AgentRow.id == agent_id)).one()
    next_due = session.scalar(select(func.min(WakeupRow.due_at)).where(
        WakeupRow.agent_id == agent_id, WakeupRow.kind == HEARTBEAT, WakeupRow.fired_at.is_(None)
    ))
    return HeartbeatState(bool(row.heartbeats_on), next_due, row.heartbeats_paused_until, zone_or_utc(row.timezone))


def move(session: Session, wakeup_id: int, due_at: datetime) -> None:
    """Put an unclaimed wake-up off to `due_at` (a heartbeat due in quiet hours or a pause, to their end)."""
    session.execute(update(WakeupRow).where(WakeupRow.id == wakeup_id, WakeupRow.fired_at.is_(None))
                    .values(due_at=due_at))


def take_unsolicited(session: Session, agent_id: int, day: str, cap: int) -> bool:
    """Count one unsolicited message to the agent's user on `day` (their local date) if fewer than `cap` were
    sent that day; whether it may go. One statement, so processes counting at once never pass the cap."""
    if cap <= 0:
        return False
    fresh = or_(AgentRow.unsolicited_day.is_(None), AgentRow.unsolicited_day != day)
    taken = session.execute(
        update(AgentRow)
        .where(AgentRow.id == agent_id, or_(fresh, AgentRow.unsolicited_sent < cap))
        .values(unsolicited_sent=case((fresh, 1), else_=AgentRow.unsolicited_sent + 1), unsolicited_day=day)
    )
    return taken.rowcount == 1


@dataclass(frozen=True)
class Wakeup:
    id: int
    agent_id: int
    kind: str
    due_at: datetime
    note: str
    #: Claims so far: 0 for a wake-up never fired, 1 for one whose claim went stale (a retry).
    attempts: int = 0


def _wakeup(row: WakeupRow) -> Wakeup:
    return Wakeup(row.id, row.agent_id, row.kind, row.due_at, row.note, row.attempts)


def _of(query: Select[Any], agents: Collection[int] | None, platforms: Collection[str] | None) -> Select[Any]:
    """Only these agents' wake-ups, and only those of agents whose users are on these platforms, if given."""
    if agents is not None:
        query = query.where(WakeupRow.agent_id.in_(list(agents)))
    if platforms is not None:
        owned = select(IdentityRow.agent_id).where(IdentityRow.platform.in_(list(platforms)))
        query = query.where(WakeupRow.agent_id.in_(owned))
    return query


def due(session: Session, now: datetime, agents: Collection[int] | None = None, limit: int = 100,
        platforms: Collection[str] | None = None) -> list[Wakeup]:
    """Wake-ups due by `now` (of these agents, these platforms' users, if given), oldest first: the unfired, and
    those whose claim went stale unfinished with a retry left."""
    retry = and_(WakeupRow.fired_at < now - STALE_CLAIM, WakeupRow.finished_at.is_(None),
                 WakeupRow.attempts < MAX_ATTEMPTS)
    query = _of(select(WakeupRow).where(WakeupRow.due_at <= now, or_(WakeupRow.fired_at.is_(None), retry)),
                agents, platforms)
    return [_wakeup(row) for row in session.scalars(query.order_by(WakeupRow.due_at, WakeupRow.id).limit(limit))]


def next_due(session: Session, agents: Collection[int] | None = None,
             platforms: Collection[str] | None = None) -> datetime | None:
    query = _of(select(func.min(WakeupRow.due_at)).where(WakeupRow.fired_at.is_(None)), agents, platforms)
    return session.scalar(query)


def claim(session: Session, wakeup: Wakeup, now: datetime, holder: str) -> bool:
    """Take `wakeup` (as `due` read it) for this process: True for exactly one claimant, and only while it is
    unfired, or claimed `attempts` times by a process that never finished it (a retry). A timed heartbeat due
    while the agent's heartbeats are paused is not taken: it is moved to the end of the pause."""
    if wakeup.kind == HEARTBEAT and wakeup.attempts == 0:
        paused = session.scalar(select(AgentRow.heartbeats_paused_until).where(AgentRow.id == wakeup.agent_id))
        if paused is not None and paused > now:
            move(session, wakeup.id, paused)
            return False
    unclaimed = WakeupRow.fired_at.is_(None) if wakeup.attempts == 0 else and_(
        WakeupRow.fired_at < now - STALE_CLAIM, WakeupRow.finished_at.is_(None)
    )
    taken = session.execute(
        update(WakeupRow)
        .where(WakeupRow.id == wakeup.id, WakeupRow.attempts == wakeup.attempts,
               WakeupRow.attempts < MAX_ATTEMPTS, unclaimed)
        .values(fired_at=now, claimed_by=holder[:100], attempts=wakeup.attempts + 1)
    )
    return taken.rowcount == 1


def finish(session: Session, wakeup_id: int, now: datetime) -> None:
    """The step of a claimed wake-up ended (delivered, skipped or failed cleanly): it is never fired again."""
    session.execute(update(WakeupRow).where(WakeupRow.id == wakeup_id).values(finished_at=now))


def pending_reminders(session: Session, agent_id: int) -> list[Wakeup]:
    rows = session.scalars(select(WakeupRow).where(
        WakeupRow.agent_id == agent_id, WakeupRow.kind == REMINDER, WakeupRow.fired_at.is_(None)
    ).order_by(WakeupRow.due_at, WakeupRow.id))
    return [_wakeup(row) for row in rows]


def cancel_reminder(session: Session, agent_id: int, wakeup_id: int) -> bool:
    """Drop the agent's pending reminder `wakeup_id`; whether there was one."""
    gone = session.execute(delete(WakeupRow).where(
        WakeupRow.id == wakeup_id, WakeupRow.agent_id == agent_id, WakeupRow.kind == REMINDER,
        WakeupRow.fired_at.is_(None),
    ))
    return gone.rowcount == 1


def forget_fired(session: Session, now: datetime) -> int:
    return session.execute(delete(WakeupRow).where(WakeupRow.fired_at < now - KEEP_FIRED)).rowcount


@dataclass(frozen=True)
class Reminder:
    """A pending reminder as the user sees it: `when` in their time zone."""

    id: int
    due_at: datetime
    when: str
    note: str


def reminders_of(session: Session, agent_id: int) -> list[Reminder]:
    tz = user_zone(session, agent_id)
    return [Reminder(w.id, w.due_at, local_text(w.due_at, tz), w.note) for w in pending_reminders(session, agent_id)]
