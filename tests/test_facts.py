"""Facts with time (issue 23, part 2): supersession keeps history, scopes and agents stay apart, and the agent
writes and reads facts through knowledge_insert / knowledge_search, also at rest (reflection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from membot.agent.events import FunctionResult
from membot.agent.place import PRIVATE, Place
from membot.agent.store import facts, wakeups
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow, EntityMentionRow, EntityRow, FactRow, MessageRow, utcnow
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.views import memory_text
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ScriptedModel, send, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)

CHANNEL = Place.shared("test:general", "#general")
NOW = datetime(2030, 1, 15, 10, 0)


def day(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def new_agents(db: Database, *names: str) -> list[int]:
    def make(session: Session) -> list[int]:
        rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

    return await db.write(make)


async def add(db: Database, agent: int, subject: str, relation: str, obj: str, since: str | None = None, *,
              private: bool = True) -> facts.Added:
    return await db.write(partial(facts.add_fact, agent_id=agent, subject=subject, relation=relation, object=obj,
                                  private=private, valid_from=day(since) if since else None, now=NOW))


async def read(db: Database, how: Callable[..., Any], agent: int, key: str, *, private: bool = True) -> Any:
    return await db.read(partial(how, agent_id=agent, key=key, private=private))


def spans(found: list[facts.Fact]) -> list[tuple[str, str, datetime, datetime | None]]:
    return [(f.relation, f.object, f.valid_from, f.valid_to) for f in found]


def test_keys_are_normalised_as_entity_keys() -> None:
    assert facts.entity_key("  Caroline, ") == facts.entity_key("caroline") == "caroline"
    assert facts.entity_key("Dr. Smith") == "dr smith" and facts.entity_key("@mel") == "mel"
    assert facts.relation_name(" Lives  in ") == facts.relation_name("lives_in") == "lives_in"


async def test_supersession_keeps_history(db):
    [alice] = await new_agents(db, "alice")
    await add(db, alice, "Caroline", "lives in", "Berlin", "2021-01-01")
    await add(db, alice, "Caroline", "lives_in", "Paris", "2022-03-01")
    added = await add(db, alice, "caroline", "Lives in", "Sweden", "2023-05-08")
    assert not added.known and [old.object for old in added.replaced] == ["Paris"]
    assert spans(await read(db, facts.current, alice, "caroline")) == [
        ("lives_in", "Sweden", day("2023-05-08"), None)]
    assert spans(await read(db, facts.history, alice, "Caroline".casefold())) == [
        ("lives_in", "Berlin", day("2021-01-01"), day("2022-03-01")),
        ("lives_in", "Paris", day("2022-03-01"), day("2023-05-08")),
        ("lives_in", "Sweden", day("2023-05-08"), None),
    ]
    # Stored, not only shown: each old row names the one that replaced it; nothing was deleted.
    rows = await db.read(lambda s: list(s.execute(select(FactRow.object, FactRow.valid_to, FactRow.superseded_by)
                                                  .order_by(FactRow.id))))
    ids = await db.read(lambda s: list(s.scalars(select(FactRow.id).order_by(FactRow.id))))
    assert rows == [("Berlin", day("2022-03-01"), ids[1]), ("Paris", day("2023-05-08"), ids[2]),
                    ("Sweden", None, None)]
    # A fact dated between two others takes its place in the history.
    between = await add(db, alice, "Caroline", "lives_in", "Lisbon", "2021-06-01")
    assert between.until is not None and between.until.object == "Paris"
    assert spans(await read(db, facts.history, alice, "caroline"))[:3] == [
        ("lives_in", "Berlin", day("2021-01-01"), day("2021-06-01")),
        ("lives_in", "Lisbon", day("2021-06-01"), day("2022-03-01")),
        ("lives_in", "Paris", day("2022-03-01"), day("2023-05-08")),
    ]
    # The other end of a fact finds it too, and each end is the other's neighbour.
    assert spans(await read(db, facts.current, alice, "sweden")) == [("lives_in", "Sweden", day("2023-05-08"), None)]
    assert await read(db, facts.neighbours, alice, "caroline") == ["Sweden", "Lisbon", "Paris", "Berlin"]
    assert await read(db, facts.neighbours, alice, "berlin") == ["Caroline"]


async def test_the_same_fact_again_is_not_stored_twice(db):
    [alice] = await new_agents(db, "alice")
    await add(db, alice, "Caroline", "lives_in", "Paris", "2022-03-01")
    await add(db, alice, "Caroline", "lives_in", "Sweden", "2023-05-08")
    again = await add(db, alice, "CAROLINE", "lives in", "sweden.")
    assert again.known and again.fact.object == "Sweden" and again.fact.valid_from == day("2023-05-08")
    # Known from earlier than recorded: the same fact, dated back; the one before it now ends there.
    earlier = await add(db, alice, "Caroline", "lives_in", "Sweden", "2023-01-01")
    assert earlier.known
    assert spans(await read(db, facts.history, alice, "caroline")) == [
        ("lives_in", "Paris", day("2022-03-01"), day("2023-01-01")),
        ("lives_in", "Sweden", day("2023-01-01"), None),
    ]
    assert await db.read(lambda s: s.scalar(select(func.count()).select_from(FactRow))) == 2
    with pytest.raises(facts.FactRefused, match="The object is empty"):
        await add(db, alice, "Caroline", "likes", "  ")
    with pytest.raises(facts.FactRefused, match="keep it under 300"):
        await add(db, alice, "Caroline", "likes", "x" * 301)


async def test_agents_never_see_or_replace_each_others_facts(db):
    alice, bob = await new_agents(db, "alice", "bob")
    await add(db, alice, "Caroline", "lives_in", "Sweden")
    added = await add(db, bob, "Caroline", "lives_in", "Berlin")
    assert added.replaced == []
    assert [f.object for f in await read(db, facts.current, alice, "caroline")] == ["Sweden"]
    assert [f.object for f in await read(db, facts.history, bob, "caroline")] == ["Berlin"]
    assert await read(db, facts.neighbours, bob, "sweden") == []
    # Facts go with their agent, and with nothing else.
    await db.write(lambda s: s.execute(delete(AgentRow).where(AgentRow.id == alice)))
    left = await db.read(lambda s: list(s.scalars(select(FactRow.agent_id))))
    assert left == [bob]


async def test_a_shared_step_sees_no_private_fact_and_a_private_one_never_replaces_a_shared_one(db):
    [alice] = await new_agents(db, "alice")
    await add(db, alice, "Caroline", "lives_in", "Berlin", "2021-01-01", private=False)
    added = await add(db, alice, "Caroline", "lives_in", "Sweden", "2023-05-08", private=True)
    # In the DM's view the private fact replaces the shared one...
    assert [old.object for old in added.replaced] == ["Berlin"]
    assert spans(await read(db, facts.history, alice, "caroline", private=True)) == [
        ("lives_in", "Berlin", day("2021-01-01"), day("2023-05-08")),
        ("lives_in", "Sweden", day("2023-05-08"), None),
    ]
    # ...but the shared row is untouched: a channel still sees it current, and nothing of Sweden.
    assert spans(await read(db, facts.history, alice, "caroline", private=False)) == [
        ("lives_in", "Berlin", day("2021-01-01"), None)]
    assert await read(db, facts.current, alice, "sweden", private=False) == []
    assert await read(db, facts.neighbours, alice, "caroline", private=False) == ["Berlin"]
    shared = await db.read(lambda s: s.execute(select(FactRow.valid_to, FactRow.superseded_by)
                                               .where(FactRow.private.is_(False))).one())
    assert tuple(shared) == (None, None)
    # A channel learning a newer fact supersedes its own shared one only; the DM sees the newest.
    added = await add(db, alice, "Caroline", "lives_in", "Oslo", "2024-02-01", private=False)
    assert [old.object for old in added.replaced] == ["Berlin"]
    assert [f.object for f in await read(db, facts.current, alice, "caroline", private=True)] == ["Oslo"]
    assert [f.object for f in await read(db, facts.current, alice, "caroline", private=False)] == ["Oslo"]
    # The same object again from a channel while a DM holds it privately: a shared fact of its own, not a leak.
    await add(db, alice, "Caroline", "works_at", "Acme", "2020-01-01", private=True)
    shared_again = await add(db, alice, "Caroline", "works_at", "Acme", "2020-06-01", private=False)
    assert not shared_again.known
    assert [f.valid_from for f in await read(db, facts.current, alice, "acme", private=True)] == [day("2020-01-01")]


async def test_a_private_fact_dated_back_lengthens_a_shared_one_and_never_ends_it(db):
    [alice] = await new_agents(db, "alice")
    await add(db, alice, "Caroline", "lives_in", "Sweden", "2023-05-08", private=False)
    await add(db, alice, "Caroline", "lives_in", "Sweden", "2021-01-01", private=True)
    # The DM knows she has lived there since 2021, and still does; the channel knows what it was told.
    assert spans(await read(db, facts.current, alice, "caroline", private=True)) == [
        ("lives_in", "Sweden", day("2021-01-01"), None)]
    assert spans(await read(db, facts.current, alice, "caroline", private=False)) == [
        ("lives_in", "Sweden", day("2023-05-08"), None)]


async def test_a_fact_that_cannot_be_recorded_says_what_to_change(db):
    [alice] = await new_agents(db, "alice")
    with pytest.raises(facts.FactRefused, match="The relation has no letters or digits"):
        await add(db, alice, "Caroline", "!!!", "Sweden", "2023-05-08", private=True)
    with pytest.raises(ValueError, match="Entry 2 of the export's 'facts' has valid_to 'someday', not an ISO time"):
        await db.write(lambda s: facts.imported(s, alice, [
            {"subject": "A", "relation": "r", "object": "B", "valid_from": "2023-01-01T00:00:00"},
            {"subject": "A", "relation": "r", "object": "C", "valid_from": "2023-02-01T00:00:00",
             "valid_to": "someday"}]))
    with pytest.raises(ValueError, match="Entry 1 of the export's 'facts': The subject is 400 characters"):
        await db.write(lambda s: facts.imported(s, alice, [
            {"subject": "A" * 400, "relation": "r", "object": "B", "valid_from": "2023-01-01T00:00:00"}]))


async def test_neighbours_include_entities_named_in_the_same_messages_of_the_view(db):
    alice, bob = await new_agents(db, "alice", "bob")

    def said(session: Session, agent: int, private: bool, names: list[str]) -> None:
        message = MessageRow(agent_id=agent, role="user", kind="user_message", content=" ".join(names),
                             search_text=" ".join(names), private=private)
        session.add(message)
        session.flush()
        for name in names:
            key = facts.entity_key(name)
            entity = session.scalar(select(EntityRow).where(EntityRow.agent_id == agent, EntityRow.key == key,
                                                            EntityRow.private.is_(private)))
            if entity is None:
                entity = EntityRow(agent_id=agent, key=key, name=name, private=private, mentions=0, weight=0.0,
                                   first_seen=NOW, last_seen=NOW, aliases=[])
                session.add(entity)
                session.flush()
            session.add(EntityMentionRow(entity_id=entity.id, message_id=message.id, agent_id=agent))

    def talk(session: Session) -> None:
        said(session, alice, True, ["Caroline", "Melanie"])
        said(session, alice, False, ["Caroline", "Oscar"])
        said(session, alice, False, ["Caroline", "Oscar", "Lund"])
        said(session, bob, False, ["Caroline", "Zed"])

    await db.write(talk)
    await add(db, alice, "Caroline", "lives_in", "Sweden", private=False)
    # Facts first, then co-mentions, most often first; the DM's Melanie only in a private view; never Bob's Zed.
    assert await read(db, facts.neighbours, alice, "caroline") == ["Sweden", "Oscar", "Lund", "Melanie"]
    assert await read(db, facts.neighbours, alice, "caroline", private=False) == ["Sweden", "Oscar", "Lund"]
    assert await read(db, facts.neighbours, bob, "caroline") == ["Zed"]


# ----- through the step loop -----------------------------------------------------------------------------------


async def run(service: BotService, model: ScriptedModel, user: Any, *calls: tuple[str, dict[str, Any]],
              place: Place = PRIVATE) -> list[FunctionResult]:
    """The agent calls each function in turn (each asks for a heartbeat to go on), then replies."""
    for name, args in calls:
        model.script(tool_call(name, {**args, "request_heartbeat": True}))
    model.script(send("Done."))
    events = await collect(service.chat(user, "go", place))
    return [e for e in events if isinstance(e, FunctionResult) and e.name != "send_message"]


async def test_knowledge_search_through_the_step_loop(service, model, user):
    alice = user("alice")
    results = await run(
        service, model, alice,
        ("knowledge_insert", {"subject": "Caroline", "relation": "lives in", "object": "Berlin", "when": "2023-01-01"}),
        ("knowledge_insert", {"subject": "Caroline", "relation": "lives_in", "object": "Sweden", "when": "2023-05-08"}),
        ("knowledge_insert", {"subject": "Melanie", "relation": "friend_of", "object": "Caroline"}),
        ("knowledge_search", {"entity": "caroline"}),
        ("knowledge_search", {"entity": "Caroline", "history": True}),
        ("knowledge_search", {"entity": "Atlantis"}),
        ("knowledge_insert", {"subject": "Caroline", "relation": "lives_in", "object": "Sweden"}),
        ("knowledge_insert", {"subject": "Caroline", "relation": "likes", "object": "tea", "when": "last spring"}),
        ("knowledge_insert", {"subject": "Caroline", "relation": "likes", "object": "tea", "when": "in 2 days"}),
    )
    assert all(r.ok for r in results[:-2]), results
    assert results[0].result == "Noted: Caroline lives_in Berlin (since 2023-01-01)."
    assert results[1].result == ("Noted: Caroline lives_in Sweden (since 2023-05-08) "
                                 "(replaces: Caroline lives_in Berlin (2023-01-01 to 2023-05-08)).")
    today = f"{utcnow():%Y-%m-%d}"
    lines = results[3].result.splitlines()
    assert lines[:2] == ["Caroline lives_in Sweden (since 2023-05-08)", f"Melanie friend_of Caroline (since {today})"]
    assert "1 replaced" in lines[2] and lines[3] == "Linked: Melanie, Sweden, Berlin"
    assert "History:\nCaroline lives_in Berlin (2023-01-01 to 2023-05-08)" in results[4].result
    assert results[5].result == "Nothing known about Atlantis; try conversation_search."
    assert results[6].result == "Already known: Caroline lives_in Sweden (since 2023-05-08)."
    assert not results[7].ok and "Could not read when='last spring'; give a date (YYYY-MM-DD)" in results[7].result
    assert not results[8].ok and "when='in 2 days' is in the future; record a fact once it holds" in results[8].result
    # Learnt in a DM: a shared channel's step finds none of it.
    [found] = await run(service, model, alice, ("knowledge_search", {"entity": "Caroline"}), place=CHANNEL)
    assert found.result == "Nothing known about Caroline; try conversation_search."
    # /memory shows the user what holds now, newest first; Berlin is history.
    report = await service.memory(alice)
    assert report.fact_count == 2
    assert report.facts == (f"Melanie friend_of Caroline (since {today})", "Caroline lives_in Sweden (since 2023-05-08)")
    assert "Facts that hold now: Melanie friend_of Caroline" in memory_text(report)


async def test_when_is_read_in_the_users_time_zone(service, model, user):
    alice = user("alice")
    agent = (await service.agent_id(alice))[0]
    await service.engine.db.write(partial(wakeups.set_zone, agent_id=agent, name="Asia/Tokyo"))
    results = await run(
        service, model, alice,
        ("knowledge_insert", {"subject": "Caroline", "relation": "moved_to", "object": "Sweden", "when": "2023-05-08"}),
        ("knowledge_insert", {"subject": "Caroline", "relation": "met", "object": "Mel", "when": "2023-05-08T08:30"}),
    )
    assert [r.result for r in results] == ["Noted: Caroline moved_to Sweden (since 2023-05-08).",
                                           "Noted: Caroline met Mel (since 2023-05-08)."]
    stored = await service.engine.db.read(lambda s: list(s.scalars(select(FactRow.valid_from).order_by(FactRow.id))))
    # Midnight and 08:30 in Tokyo (UTC+9) are the evening before and 23:30 the day before, in UTC.
    assert stored == [datetime(2023, 5, 7, 15, 0), datetime(2023, 5, 7, 23, 30)]


async def test_facts_are_extracted_at_rest_by_the_reflection(home, model, user, database_url):
    service = await BotService.open(make_settings(home, model, MEMBOT_DATABASE_URL=database_url,
                                                  MEMBOT_REFLECT_AFTER_MINUTES=20))
    try:
        model.script(send("Congratulations on the move!"))
        await collect(service.chat(user("alice"), "My sister Caroline moved to Sweden last week"))
        talked = utcnow()
        delivered: list[Any] = []

        async def inbox(agent_id: int, events: Any) -> None:
            delivered.extend([event async for event in events])

        model.script(tool_call("knowledge_insert", {"subject": "Caroline", "relation": "lives_in", "object": "Sweden"},
                               "A lasting fact about her sister."))
        assert await Scheduler(service, inbox).tick(talked + timedelta(minutes=21)) == 1
        woken = model.requests[-1]["messages"][-1]["content"]
        assert '"type": "reflection"' in woken and "knowledge_insert" in woken
        assert [e.result for e in delivered if isinstance(e, FunctionResult)][0].startswith(
            "Noted: Caroline lives_in Sweden")

        [found] = await run(service, model, user("alice"), ("knowledge_search", {"entity": "Sweden"}))
        assert found.result.startswith("Caroline lives_in Sweden (since ")
    finally:
        await service.close()


async def test_facts_travel_in_a_memory_export_with_their_history(service, user):
    alice, bob = user("alice"), user("bob")
    agent = (await service.agent_id(alice))[0]
    db = service.engine.db
    await add(db, agent, "Caroline", "lives_in", "Berlin", "2021-01-01", private=False)
    await add(db, agent, "Caroline", "lives_in", "Sweden", "2023-05-08", private=False)
    await add(db, agent, "Caroline", "lives_in", "Paris", "2022-01-01", private=False)  # dated back, between
    await add(db, agent, "Caroline", "works_at", "Acme", "2022-02-02", private=True)
    _, raw = await service.export_memory(alice)
    assert [f["object"] for f in json.loads(raw)["facts"]] == ["Berlin", "Sweden", "Paris", "Acme"]
    assert "as the agent of bob" in await service.import_memory(raw, bob)
    copy = (await service.agent_id(bob))[0]
    for private in (True, False):
        assert spans(await read(db, facts.history, copy, "caroline", private=private)) == spans(
            await read(db, facts.history, agent, "caroline", private=private))
    links = await db.read(lambda s: list(s.execute(select(FactRow.object, FactRow.superseded_by)
                                                   .where(FactRow.agent_id == copy).order_by(FactRow.id))))
    ids = await db.read(lambda s: list(s.scalars(select(FactRow.id).where(FactRow.agent_id == copy)
                                                 .order_by(FactRow.id))))
    assert links == [("Berlin", ids[2]), ("Sweden", None), ("Paris", ids[1]), ("Acme", None)]
