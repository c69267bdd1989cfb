"""Facts with time (store/facts.py) through two functions: the agent records a fact, and looks up an entity."""

from __future__ import annotations

from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from membot.agent.memory.entities import entity_key
from membot.agent.store import facts, wakeups
from membot.agent.store.facts import Fact
from membot.agent.store.schema import utcnow
from membot.agent.tools.context import ToolContext


async def _zone(ctx: ToolContext) -> ZoneInfo:
    return await ctx.recall.db.read(partial(wakeups.user_zone, agent_id=ctx.agent_id))


async def knowledge_insert(ctx: ToolContext, subject: str, relation: str, object: str, when: str = "",
                           request_heartbeat: bool = False) -> str | None:
    """Record a lasting fact; a new object for the same subject and relation replaces the old.

    Args:
        subject: Who or what, e.g. Caroline.
        relation: e.g. lives_in.
        object: e.g. Sweden.
        when: Since when, YYYY-MM-DD (default now).
    """
    tz, now = await _zone(ctx), utcnow()
    since = None
    if when.strip():
        try:
            since = wakeups.parse_when(when, now, tz)
        except wakeups.WakeupRefused:
            raise ValueError(
                f"Could not read when={when[:80]!r}; give a date (YYYY-MM-DD) or an ISO time (2023-05-08T14:00), "
                "or leave it empty for now."
            ) from None
        if since > now:
            raise ValueError(f"when={when[:80]!r} is in the future; record a fact once it holds (schedule_wakeup "
                             "can remind you), or give the date it began.")
    added = await ctx.write(partial(
        facts.add_fact, agent_id=ctx.agent_id, subject=subject, relation=relation, object=object,
        private=ctx.place.private, valid_from=since, now=now,
    ))
    if added.known:
        return f"Already known: {added.fact.describe(tz)}."
    notes = [f"replaces: {old.describe(tz)}" for old in added.replaced]
    if added.until is not None:
        notes.append(f"then: {added.until.object}")
    return f"Noted: {added.fact.describe(tz)}" + (f" ({'; '.join(notes)})" if notes else "") + "."


async def knowledge_search(ctx: ToolContext, entity: str, history: bool = False,
                           request_heartbeat: bool = False) -> str | None:
    """Your recorded facts about an entity, and entities linked to it.

    Args:
        entity: Name, e.g. Caroline.
        history: Also replaced facts.
    """
    key = entity_key(entity)
    if not key:
        raise ValueError("entity is empty; name who or what to look up")
    private = ctx.place.private

    def look(session: Session) -> tuple[list[Fact], list[str], ZoneInfo]:
        known = facts.history(session, ctx.agent_id, key, private=private)
        linked = facts.neighbours(session, ctx.agent_id, key, private=private, known=known)
        return known, linked, wakeups.user_zone(session, ctx.agent_id)

    known, linked, tz = await ctx.recall.db.read(look)
    if not known and not linked:
        return f"Nothing known about {entity}; try conversation_search."
    now = [fact for fact in known if fact.current]
    past = [fact for fact in known if not fact.current]
    lines = [fact.describe(tz) for fact in now] or [f"No current facts about {entity}."]
    if history and past:
        lines += ["History:"] + [fact.describe(tz) for fact in past]
    elif past:
        lines.append(f"({len(past)} replaced: history=true shows them)")
    if linked:
        lines.append(f"Linked: {', '.join(linked)}")
    return "\n".join(lines)


KNOWLEDGE_FUNCTIONS = [knowledge_insert, knowledge_search]
