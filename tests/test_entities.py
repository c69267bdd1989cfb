"""Entity memory (issue 23, part 1): the local extractor, decayed counts, the top list in the prompt and in
/memory, isolation between agents and between private and shared talk, and the backfill of old messages."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from membot.agent.context.tokens import estimate_tokens
from membot.agent.memory.entities import (
    ENTITIES_HEADING,
    HALF_LIFE,
    MAX_NAME,
    PROMPT_TOKENS,
    Entity,
    TopEntities,
    counted,
    decayed,
    extract,
    mentioned,
    merged,
    render_entities,
)
from membot.agent.messages import user_message
from membot.agent.place import Place
from membot.agent.store import entities as store
from membot.agent.store.db import Database
from membot.agent.store.migrate import upgrade
from membot.agent.store.schema import MessageRow
from tests.conftest import collect
from tests.fakes.openai_server import send
from tests.test_migrations import _engine, _upgrade_to, fresh_url, postgres_url  # noqa: F401 (fixtures)

DM = Place.direct("a direct message")
GENERAL = Place.shared("test:general", "#general")
T0 = datetime(2024, 5, 1, 12, 0)


def _names(said: str) -> list[str]:
    return [m.name for m in counted(extract(said), lambda key: False)]


# ----- the extractor ------------------------------------------------------------------------------------------


def test_names_and_places_are_found_without_sentence_openers():
    said = ("Hey Caroline! I went to New York with Dr. Smith on Monday. Thanks, it was great. "
            "Caroline's dog Oscar met @bob.k at the LGBTQ center. Seeing them was fun.")
    assert _names(said) == ["Caroline", "New York", "Dr. Smith", "Oscar", "LGBTQ", "@bob.k"]
    # Ordinary openers, days, months, "I" and contractions are no entity; SHOUTED ordinary words neither.
    assert _names("The weather is nice. Yesterday I'm tired. May was long, and Friday too. I LOVE THIS.") == []


def test_each_entity_is_counted_once_per_message_and_keyed_by_its_normal_form():
    found = extract("Mel, Mel, MEL! Mel's cat.")
    assert [(m.name, m.key) for m in found] == [("Mel", "mel")]
    assert extract("Dr. Smith")[0].key == extract("dr smith at home with Dr Smith")[0].key == "dr smith"


def test_a_sentence_initial_word_counts_only_for_a_known_entity():
    found = extract("Caroline went home. Seeing her was fun.")
    assert [(m.name, m.initial) for m in found] == [("Caroline", True), ("Seeing", True)]
    assert [m.name for m in counted(found, lambda key: key == "caroline")] == ["Caroline"]
    # Seen inside a sentence too: no doubt about it.
    assert [(m.name, m.initial) for m in extract("Caroline called. I love Caroline.")] == [("Caroline", False)]


def test_chinese_japanese_and_korean_names_before_an_honorific_and_katakana_names():
    assert [(m.name, m.key) for m in extract("明日は東京で山田さんと寿司を食べる予定です")] == [("山田さん", "山田")]
    assert [m.key for m in extract("我和王老师去了图书馆")] == ["王"]
    assert [m.key for m in extract("어제 김민수 씨를 만났어요")] == ["김민수"]
    assert [m.name for m in extract("トムとスターバックスに行った")] == ["トム", "スターバックス"]
    assert extract("我对花生过敏") == []  # unspaced Han text without an honorific: not covered


# ----- decay --------------------------------------------------------------------------------------------------


def test_weights_decay_by_half_each_half_life_and_count_in_any_order():
    assert mentioned(0.0, None, T0) == (1.0, T0)
    weight, seen = mentioned(1.0, T0, T0 + HALF_LIFE)
    assert (weight, seen) == (1.5, T0 + HALF_LIFE)
    assert decayed(weight, seen, seen + 2 * HALF_LIFE) == pytest.approx(0.375)
    assert decayed(2.0, T0, T0 - HALF_LIFE) == 2.0  # never raised for an earlier time
    # Recorded out of order: the same weight as in order.
    a = mentioned(*mentioned(0.0, None, T0), T0 + HALF_LIFE)
    b = mentioned(*mentioned(0.0, None, T0 + HALF_LIFE), T0)
    assert a[1] == b[1] and a[0] == pytest.approx(b[0])


def test_recent_mentions_outrank_old_frequent_ones():
    old = Entity("bob", "Bob", 10, 10.0, T0, T0)
    new = Entity("ann", "Ann", 3, 3.0, T0 + 4 * HALF_LIFE, T0)
    assert [e.name for e in merged([old, new], T0 + 4 * HALF_LIFE)] == ["Ann", "Bob"]
    assert [e.name for e in merged([old, new], T0)] == ["Bob", "Ann"]


def _entity(i: int, at: datetime, private: bool = False) -> Entity:
    return Entity(f"k{i}", f"Name{i}", i + 1, float(i + 1), at, at, private)


def test_a_long_name_or_handle_is_kept_to_the_columns_size():
    [handle] = extract("ping @" + "a" * 300)
    [name] = extract("I met S" + "ß" * 150)  # folded, ß is "ss": the key would be twice the name
    assert len(handle.key) <= MAX_NAME and len(name.key) <= MAX_NAME and len(name.name) <= MAX_NAME


def test_the_rendered_list_stays_within_its_budget():
    assert render_entities([]) == ""
    line = render_entities([Entity("caroline", "Caroline", 42, 9.0, T0, T0), Entity("sweden", "Sweden", 3, 1.0, T0, T0)])
    assert line == "Caroline (42), Sweden (3)"
    many = [Entity(f"k{i}", f"Someone With A Long Name {i}", 1000 + i, 1.0, T0, T0) for i in range(60)]
    for budget in (5, 20, 100):
        line = render_entities(many, max_tokens=budget)
        assert not line or estimate_tokens(f"{ENTITIES_HEADING}\n{line}") <= budget  # the heading is paid too
    assert line.startswith("Someone With A Long Name 0 (1000), ") and line.count("(") >= 5


def test_the_kept_top_list_is_the_same_as_reading_it_again():
    # Entities mentioned at random times in both scopes: the list kept up to date from each recording equals
    # the list ranked from scratch, for a shared and a private step.
    rng = random.Random(7)
    rows: dict[tuple[bool, str], Entity] = {}
    top = TopEntities([], [], 5)
    now = T0
    for _ in range(300):
        now += timedelta(hours=rng.randint(0, 72))
        key, private = f"k{rng.randint(0, 30)}", rng.random() < 0.4
        before = rows.get((private, key)) or Entity(key, key.upper(), 0, 0.0, now, now, private)
        weight, seen = mentioned(before.weight, before.last_seen if before.mentions else None, now)
        rows[(private, key)] = Entity(key, before.name, before.mentions + 1, weight, seen, before.first_seen, private)
        top.update([e for (_, k), e in rows.items() if k == key], now)
    shared = merged([e for e in rows.values() if not e.private], now)[:5]
    everything = merged(rows.values(), now)[:5]
    assert [e.key for e in top.seen(private=False)] == [e.key for e in shared]
    assert [e.key for e in top.seen(private=True)] == [e.key for e in everything]
    assert [e.mentions for e in top.seen(private=True)] == [e.mentions for e in everything]


# ----- the store ----------------------------------------------------------------------------------------------

async def _agents(db: Database, *names: str) -> list[int]:
    sql = text("""INSERT INTO agents (name, persona_name, human_name, created_at, summary, summary_hidden,
        last_prompt_tokens, archival_passages, token_ratio, pressure_alerted) VALUES
        (:name, 'p', 'h', CURRENT_TIMESTAMP, '', 0, 0, 0, 1.0, false) RETURNING id""")
    return [await db.write(lambda s, n=name: s.execute(sql, {"name": n}).scalar_one()) for name in names]


def _record(db: Database, agent: int, said: str, private: bool, at: datetime):
    message = user_message(agent, said)
    message.private, message.created_at = private, at

    def write(session):
        from membot.agent.memory.recall import insert_messages

        insert_messages(session, [message])
        return store.record(session, agent, [message])

    return db.write(write)


@pytest.mark.both_databases
async def test_agents_and_scopes_are_kept_apart_in_the_store(db):
    alice, bob = await _agents(db, "alice", "bob")
    await _record(db, alice, "I told Priya about the Zanzibar trip", True, T0)
    await _record(db, alice, "we said Oslo and Priya in the channel", False, T0 + timedelta(hours=1))
    await _record(db, bob, "Bob met Quentin", True, T0)

    def read(session, agent, private):
        return [(e.name, e.mentions) for e in store.top(session, agent, private=private, now=T0, limit=10)]

    assert await db.read(lambda s: read(s, alice, True)) == [("Priya", 2), ("Oslo", 1), ("Zanzibar", 1)]
    assert await db.read(lambda s: read(s, alice, False)) == [("Oslo", 1), ("Priya", 1)]
    assert await db.read(lambda s: read(s, bob, True)) == [("Quentin", 1)]
    # What conversation search asks: which messages name these entities, and which are rare enough to count.
    ids = await db.read(lambda s: list(s.scalars(select(MessageRow.id))))
    shared = await db.read(lambda s: store.mentioning(s, alice, ["priya", "zanzibar"], ids, private=False))
    every = await db.read(lambda s: store.mentioning(s, alice, ["priya", "zanzibar"], ids, private=True))
    assert len(shared) == 1 and len(every) == 2 and set(shared) < set(every)
    assert await db.read(lambda s: store.mentioning(s, bob, ["priya", "quentin"], ids, private=True)) == {
        max(ids): {"quentin"}}
    assert await db.read(lambda s: store.rare(s, alice, ["priya", "quentin"], private=True, most=2)) == ["priya"]
    assert await db.read(lambda s: store.rare(s, alice, ["priya"], private=True, most=1)) == []
    with pytest.raises(ValueError, match="record an agent's own messages"):
        await db.write(lambda s: store.record(s, bob, [user_message(alice, "Priya")]))


# ----- through the step loop ----------------------------------------------------------------------------------


def _system(model, index: int = -1) -> str:
    return model.requests[index]["messages"][0]["content"]


@pytest.mark.both_databases
async def test_the_prompt_and_memory_carry_the_top_entities_as_each_step_may_see_them(service, model, user):
    alice, bob = user("alice"), user("bob")
    model.script(send("Noted."))
    await collect(service.chat(alice, "My sister Priya is flying to Zanzibar, keep it between us", DM))
    # Recorded with the step's own message, before its first model call.
    assert "### Entities (most mentioned)\nPriya (1), Zanzibar (1)\n" in _system(model)
    model.script(send("Hello all."), send("Sure."))
    await collect(service.chat(alice, "the team meets in Oslo with Priya", GENERAL))
    channel = _system(model, -1)
    assert "### Entities (most mentioned)\nOslo (1), Priya (1)\n" in channel and "Zanzibar" not in channel
    await collect(service.chat(alice, "anything new?", DM))
    assert "### Entities (most mentioned)\nPriya (2), Oslo (1), Zanzibar (1)\n" in _system(model, -1)

    model.script(send("Hi Bob."))
    await collect(service.chat(bob, "hello there", DM))
    assert "### Entities" not in _system(model, -1)  # nothing of Alice's

    report = await service.memory(alice)
    assert [(e.name, e.mentions) for e in report.entities] == [("Priya", 2), ("Oslo", 1), ("Zanzibar", 1)]
    # Loaded afresh (another process, a restart): the same counts, each message counted once.
    agent = await service.engine.load_agent(report.agent_id)
    assert [(e.name, e.mentions) for e in (await agent.report()).entities] == [
        ("Priya", 2), ("Oslo", 1), ("Zanzibar", 1)]


@pytest.mark.both_databases
async def test_the_prompt_list_stays_within_its_budget(service, model, user):
    alice = user("alice")
    names = " ".join(f"Person{i} Lastname{i}." for i in range(80))
    model.script(send("Many people."), send("Yes."))
    await collect(service.chat(alice, f"I met {names}", DM))
    await collect(service.chat(alice, "and?", DM))
    section = "### Entities (most mentioned)\n" + _system(model, -1).split("### Entities (most mentioned)\n")[1]
    section = section.split("\n\n")[0]
    # The heading and the list, together, within the budget the prompt leaves them.
    assert section.count("(") >= 10 and estimate_tokens(section) <= PROMPT_TOKENS


# ----- the backfill of old messages ---------------------------------------------------------------------------


async def test_the_migration_counts_the_entities_of_existing_messages(fresh_url):  # noqa: F811
    engine = _engine(fresh_url)
    try:
        await _upgrade_to(engine, "0013_private_context")
        agent = text("""INSERT INTO agents (name, persona_name, human_name, created_at, summary, summary_hidden,
            last_prompt_tokens, archival_passages, token_ratio, pressure_alerted)
            VALUES (:name, 'p', 'h', CURRENT_TIMESTAMP, '', 0, 0, 0, 1.0, false) RETURNING id""")
        said = text("""INSERT INTO messages (agent_id, role, kind, content, search_text, created_at, in_context,
            private) VALUES (:agent, :role, 'message', '', :said, :at, true, :private)""")
        talk = [(0, "user", "Caroline went to Paris", True), (0, "assistant", "Paris with Caroline!", True),
                (0, "user", "in the channel with Caroline again", False), (0, "tool", "Paris Paris", True),
                (1, "user", "Seeing you is nice, Oscar", True)]
        async with engine.begin() as conn:
            ids = [(await conn.execute(agent, {"name": n})).scalar_one() for n in ("alice", "bob")]
            for i, (who, role, words, private) in enumerate(talk):
                await conn.execute(said, {"agent": ids[who], "role": role, "said": words, "private": private,
                                          "at": T0 + timedelta(days=i)})
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT agent_id, private, key, name, mentions, first_seen FROM entities ORDER BY id"))).all()
            links = (await conn.execute(text("SELECT count(*) FROM entity_mentions"))).scalar_one()
        got = {(r.agent_id, bool(r.private), r.key, r.mentions) for r in rows}
        # "Caroline went" opens a sentence: counted only once Caroline is known ("with Caroline!").
        assert got == {(ids[0], True, "paris", 2), (ids[0], True, "caroline", 1), (ids[0], False, "caroline", 1),
                       (ids[1], True, "oscar", 1)}
        assert links == 5
    finally:
        await engine.dispose()


def test_the_extractor_is_cheap():
    said = json.dumps({"text": "Hey Caroline! I went to the LGBTQ support group in New York yesterday."})
    start = datetime.now()
    for _ in range(2000):
        extract(said)
    assert (datetime.now() - start) / 2000 < timedelta(milliseconds=1)
