"""The database's units of work: whole or nothing, agents kept apart, the URLs it refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from membot.agent.config import EngineConfigError
from membot.agent.memory.recall import RecallMemory, load_recall
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import user_message
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow, MessageRow, SourceRow
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases


async def test_a_unit_of_work_commits_whole_or_not_at_all(db: Database):
    agent = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(agent)
    assert agent.id is not None

    def half_then_fail(session: Session) -> None:
        RecallMemory(db, agent.id, TermFrequencies()).add(session, user_message(agent.id, "written, then undone"))
        raise RuntimeError("the step died")

    with pytest.raises(RuntimeError):
        await db.write(half_then_fail)
    count = select(func.count()).select_from(MessageRow)
    assert await db.scalar(count) == 0
    await store_messages(db, user_message(agent.id, "kept"))
    assert await db.scalar(count) == 1
    # A constraint broken inside the worker reaches the caller as SQLAlchemy's own error.
    await db.add(SourceRow(scope="s", name="n"))
    with pytest.raises(IntegrityError):
        await db.add(SourceRow(scope="s", name="n"))


async def test_search_runs_as_one_unit_of_work_and_keeps_agents_apart(db: Database):
    alice, bob = AgentRow(name="alice", persona_name="p", human_name="h"), AgentRow(name="bob", persona_name="p",
                                                                                     human_name="h")
    await db.add(alice, bob)
    await store_messages(db, user_message(alice.id, "I adopted a tabby cat"), user_message(bob.id, "bob's cat is secret"))
    recall = RecallMemory(db, alice.id, TermFrequencies())
    page = await recall.search("cat", private=True)
    assert [row.search_text for row in page.items] == ["I adopted a tabby cat"] and page.total == 1
    # Writes and reads at once: every write lands.
    await asyncio.gather(*(store_messages(db, user_message(alice.id, f"cat number {i}")) for i in range(20)),
                         *(recall.search("cat", private=True) for _ in range(5)))
    assert (await recall.search("cat", page_size=50, private=True)).total == 21
    assert (await db.read(lambda session: load_recall(session, [alice.id])))[alice.id].count == 21


async def test_messages_stored_by_the_step_read_back_the_same(db: Database):
    agent = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(agent)
    recall = RecallMemory(db, agent.id, TermFrequencies())
    said = user_message(agent.id, "no function was called here")
    await db.write(lambda session: recall.add(session, said))
    await db.write(lambda session: recall.add(session))  # nothing to store is no error
    assert said.id is not None and said.in_context
    stored = await db.rows(select(MessageRow.id, MessageRow.content).where(MessageRow.tool_calls.is_(None)))
    assert stored == [(said.id, said.content)]  # no calls is SQL NULL, not the JSON text 'null'
    with pytest.raises(PermissionError):
        await db.write(lambda session: recall.add(session, user_message(agent.id + 1, "not mine")))


async def test_a_commit_that_fails_leaves_no_transaction_open_for_the_next_unit_of_work(tmp_path: Path):
    # A deferred constraint is checked at COMMIT, and SQLite keeps the transaction open when it fails there
    # (as it may on a full disk): the connection must not go back to the pool still inside it.
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path}/deferred.db")
    try:
        await db.write(lambda session: session.execute(text(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, agent INTEGER REFERENCES agents(id) DEFERRABLE INITIALLY DEFERRED)")))
        agent = AgentRow(name="a", persona_name="p", human_name="h")
        await db.add(agent)
        recall = RecallMemory(db, agent.id, TermFrequencies())

        def dangling(session: Session) -> None:
            recall.add(session, user_message(recall.agent_id, "committed with a dangling note"))
            session.execute(text("INSERT INTO notes (agent) VALUES (424242)"))

        with pytest.raises(IntegrityError):
            await db.write(dangling)
        await store_messages(db, user_message(recall.agent_id, "the next one"))
        texts = await db.rows(select(MessageRow.search_text))
        assert [text for (text,) in texts] == ["the next one"]
    finally:
        await db.close()


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite:///{tmp}/sync.db", "mysql+aiomysql://u@h/db"])
async def test_a_database_membot_cannot_keep_memory_in_is_refused_with_the_setting_named(url: str, tmp_path: Path):
    with pytest.raises(EngineConfigError, match="MEMBOT_DATABASE_URL"):
        await Database.open(url.format(tmp=tmp_path))


async def test_a_database_migrated_by_a_newer_membot_is_refused_plainly(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path}/newer.db"
    db = await Database.open(url)
    await db.write(lambda session: session.execute(text("UPDATE alembic_version SET version_num = '0999_future'")))
    await db.close()
    with pytest.raises(EngineConfigError, match="newer membot"):
        await Database.open(url)
