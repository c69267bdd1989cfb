"""Conversation search on PostgreSQL (memory/recall_pg.py, migration 0003_pg_search): stemmed, ranked, the terms
OR-ed, proof against any query text, paged with a true total, one agent's messages only; and date search.

The module runs in a PostgreSQL database of its own, made by `Database.open` and dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from membot.agent.memory import recall_pg, term_stats
from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import Message, assistant_message, user_message
from membot.agent.store import migrate
from membot.agent.store.db import Database

# The server the suite's other PostgreSQL tests use (see conftest); this module makes one database of its own
# there, which `Database.open` migrates as it would any, and drops it at the end. One for the module, not one
# per test: the tests keep apart by making their own agents.
SERVER = make_url(os.environ.get("TEST_POSTGRES_URL") or "postgresql+asyncpg://postgres@127.0.0.1:5432")


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(host=SERVER.host, port=SERVER.port, user=SERVER.username,
                                       password=SERVER.password, database="postgres", timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = f"membot_fts_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        where = SERVER.render_as_string(hide_password=True)
        reason = f"PostgreSQL not reachable or usable at {where} ({exc!r}); start it or set TEST_POSTGRES_URL"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield SERVER.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


async def _agent(db: Database) -> int:
    """In plain SQL: some tests write at an older revision than the models'."""
    return await db.write(lambda session: session.execute(text(
        """INSERT INTO agents (name, persona_name, human_name, created_at, summary, summary_hidden,
        last_prompt_tokens, archival_passages, token_ratio, pressure_alerted)
        VALUES ('a', 'p', 'h', CURRENT_TIMESTAMP, '', 0, 0, 0, 1.0, false) RETURNING id""")).scalar_one())


async def _store(db: Database, *messages: Message) -> None:
    def write(session: Session) -> None:
        for message in messages:
            RecallMemory(db, message.agent_id, TermFrequencies()).add(session, message)

    await db.write(write)


async def _store_old(db: Database, *messages: Message) -> None:
    """In plain SQL, the columns 0002 had, one INSERT each in order (the trigger reads the rows before)."""
    insert = text("INSERT INTO messages (agent_id, role, kind, content, search_text, created_at, in_context) "
                  "VALUES (:agent_id, :role, :kind, :content, :search_text, :created_at, true)")

    def write(session: Session) -> None:
        for m in messages:
            session.execute(insert, {"agent_id": m.agent_id, "role": m.role, "kind": m.kind, "content": m.content,
                                     "search_text": m.search_text, "created_at": m.created_at})

    await db.write(write)


def _texts(page) -> list[str]:
    return [row.search_text for row in page.items]


async def test_finds_a_word_by_its_stem(db: Database):
    agent = await _agent(db)
    await _store(db, user_message(agent, "Nothing to see here"),
                 user_message(agent, "I was painting the fence all morning"))
    recall = RecallMemory(db, agent, TermFrequencies())
    for query in ("paints", "painted", "PAINT", "fences"):
        page = await recall.search(query, private=True)
        assert _texts(page) == ["I was painting the fence all morning"] and page.total == 1, query


async def test_a_message_with_the_word_ranks_above_the_one_that_follows_it(db: Database):
    agent = await _agent(db)
    # The second message holds the first as its context (the previous message of the same role, weight B).
    await _store(db, user_message(agent, "We adopted a puppy"), assistant_message(agent, None, None, "Lovely!"),
                 user_message(agent, "It sleeps all day"))
    page = await RecallMemory(db, agent, TermFrequencies()).search("puppy", private=True)
    assert _texts(page) == ["We adopted a puppy", "It sleeps all day"] and page.total == 2


async def test_the_terms_are_or_ed_and_a_message_with_more_of_them_ranks_first(db: Database):
    agent = await _agent(db)
    await _store(db, user_message(agent, "I play the violin"), user_message(agent, "filler one"),
                 user_message(agent, "Our dog loves the park"), user_message(agent, "filler two"),
                 user_message(agent, "The dog listens when I play violin"))
    page = await RecallMemory(db, agent, TermFrequencies()).search("What did the dog think of the violin?", private=True)
    # Either word finds a message; the fillers are found by their context (the message before), and rank last.
    assert page.total == 5
    assert _texts(page)[0] == "The dog listens when I play violin"
    assert set(_texts(page)[1:3]) == {"I play the violin", "Our dog loves the park"}
    assert set(_texts(page)[3:]) == {"filler one", "filler two"}


@pytest.mark.parametrize("query", [
    "it's \"quoted\" 'twice'", "cat & dog | !bird (x) :* <-> y:A <2>", "a\\b \\\\ \\", "lone \ud800 surrogate",
    "x" * 10_000, "word " * 2_000, "the of and a", "'", "!", ":*", "<->", "&", "\\", "\x00 nul",
])
async def test_no_query_text_makes_the_search_fail(db: Database, query: str):
    agent = await _agent(db)
    await _store(db, user_message(agent, "cat and dog and bird, quoted twice, a word or two"))
    page = await RecallMemory(db, agent, TermFrequencies()).search(query, private=True)
    assert page.total == len(page.items) <= 1


async def test_terms_reach_the_database_only_as_bound_text(db: Database):
    """Below the query parser too: whatever a term holds, it is one bound value through plainto_tsquery."""
    agent = await _agent(db)
    await _store(db, user_message(agent, "a cat sat"))
    hostile = ["cat'", "') OR true --", "&|!():*<->", "\\", "a:*", "x" * 5_000, "the"]
    rows = await db.read(lambda session: recall_pg.ranked(session, agent, hostile, 10, TermFrequencies(), private=True))
    assert [row.search_text for row in rows] == ["a cat sat"]


async def test_pages_add_up_to_the_total_best_first_and_ties_to_the_newer(db: Database):
    agent = await _agent(db)
    await _store(db, *(user_message(agent, f"note {i} about the garden") for i in range(22)),
                 user_message(agent, "garden garden garden, all about the garden"), user_message(agent, "unrelated"))
    recall = RecallMemory(db, agent, TermFrequencies())
    pages = [await recall.search("gardens", page, 5, private=True) for page in range(6)]
    assert {page.total for page in pages} == {24}  # the unrelated message is found by its context
    assert [len(page.items) for page in pages] == [5, 5, 5, 5, 4, 0]
    ids = [row.id for page in pages for row in page.items]
    assert len(set(ids)) == 24 and ids == [row.id for row in (await recall.search("gardens", 0, 50, private=True)).items]
    rows = await db.read(lambda session: recall_pg.ranked(session, agent, ["gardens"], 50, TermFrequencies(), private=True))
    assert [row.id for row in rows] == ids
    order = [(-row.score, -row.id) for row in rows]
    assert order == sorted(order) and len({row.score for row in rows}) < len(rows)  # ties, newest first


async def test_every_page_of_a_search_split_into_rare_and_common_terms_has_the_same_total(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(term_stats, "COMMON_MIN_DOCS", 20)
    monkeypatch.setattr(term_stats, "COMMON_SHARE", 1_000_000)
    monkeypatch.setattr(recall_pg, "ENOUGH_RARE_HITS", 8)
    agent = await _agent(db)
    await _store(db, *(user_message(agent, f"hello number {i}") for i in range(40)),
                 *(user_message(agent, f"hello sunrise {i}") for i in range(10)),
                 user_message(agent, "a sunrise alone"))
    recall = RecallMemory(db, agent, TermFrequencies())
    # "hello" is common: the 11 sunrise messages are the results, those that also say hello first.
    pages = [await recall.search("hello sunrise", page, 5, private=True) for page in range(4)]
    assert {page.total for page in pages} == {11}
    found = [row.search_text for page in pages for row in page.items]
    assert len(set(found)) == 11 and all("sunrise" in found_text for found_text in found)
    # Too few rare hits: every term finds them (the 50 that say hello, one more by its context), the rare first.
    await _store(db, user_message(agent, "a moonrise"))
    page = await recall.search("hello moonrise", 0, 5, private=True)
    assert page.total == 52 and page.items[0].search_text == "a moonrise"


async def test_never_another_agents_messages_not_even_as_context(db: Database):
    alice, bob = await _agent(db), await _agent(db)
    # Interleaved: bob's message sits between two of alice's, of the same role.
    await _store(db, user_message(alice, "my secret is tulips"))
    await _store(db, user_message(bob, "bob likes zebras and tulips"))
    await _store(db, user_message(alice, "the weather is fine"))
    alice_recall = RecallMemory(db, alice, TermFrequencies())
    assert (await alice_recall.search("zebras", private=True)).total == 0
    assert _texts(await alice_recall.search("tulips", private=True)) == ["my secret is tulips", "the weather is fine"]
    assert _texts(await RecallMemory(db, bob, TermFrequencies()).search("tulips weather", private=True)) == [
        "bob likes zebras and tulips"]


async def test_search_by_date_is_inclusive_oldest_first_and_one_agents(db: Database):
    alice, bob = await _agent(db), await _agent(db)
    start = datetime(2024, 3, 1, 12)
    messages = []
    for day in range(5):
        for agent in (alice, bob):
            message = user_message(agent, f"day {day} of {'alice' if agent == alice else 'bob'}")
            message.created_at = start + timedelta(days=day)
            messages.append(message)
    await _store(db, *messages)
    recall = RecallMemory(db, alice, TermFrequencies())
    page = await recall.search_dates("2024-03-02", "2024-03-04", 0, 2, private=True)
    assert page.total == 3 and _texts(page) == ["day 1 of alice", "day 2 of alice"]
    assert _texts(await recall.search_dates("2024-03-02", "2024-03-04", 1, 2, private=True)) == ["day 3 of alice"]


async def test_the_migration_gives_rows_already_there_the_vectors_the_trigger_gives(database_url: str):
    """Downgrade, store, upgrade: the backfilled vectors equal those of the same messages stored afterwards."""
    said = ["the cat sat", "on the mat", "then it slept", "all afternoon"]

    def conversation(agent: int) -> list[Message]:
        return [message for words in said
                for message in (user_message(agent, words), assistant_message(agent, "Thinking.", None, "ok"))]

    def vectors(session: Session, agent: int) -> list[str]:
        query = text("SELECT coalesce(CAST(search_vector AS text), '-') FROM messages WHERE agent_id = :agent "
                     "ORDER BY id")
        return list(session.execute(query, {"agent": agent}).scalars())

    engine = create_async_engine(database_url)
    db = Database(engine)
    try:
        await migrate.upgrade(engine)
        await migrate.downgrade(engine, "0002_leases")
        try:
            first, second = await _agent(db), await _agent(db)
            await _store_old(db, *conversation(first))
        finally:
            await migrate.upgrade(engine)
        await _store(db, *conversation(second))
        before = await db.read(lambda session: vectors(session, first))
        after = await db.read(lambda session: vectors(session, second))
        assert before == after
        # The message at weight A, the one before it of the same role at B (positions after the message's).
        assert before[:3] == ["'cat':2A 'sat':3A", "'ok':2A 'think':1A", "'cat':5B 'mat':3A 'sat':6B"]
    finally:
        await db.close()


async def test_the_search_words_statistics_list_ten_times_as_many_words(database_url: str):
    """Migration 0016: ANALYZE keeps the counts of more words (term_stats reads them instead of counting in the
    table); down again, the server's default."""

    def target(session: Session) -> int:
        return session.execute(text(
            "SELECT attstattarget FROM pg_attribute WHERE attrelid = CAST('messages' AS regclass) "
            "AND attname = 'search_vector'")).scalar_one()

    engine = create_async_engine(database_url)
    db = Database(engine)
    try:
        await migrate.upgrade(engine)
        assert await db.read(target) == 1000
        await migrate.downgrade(engine, "0015_facts")
        try:
            assert await db.read(target) == -1
        finally:
            await migrate.upgrade(engine)
    finally:
        await db.close()
