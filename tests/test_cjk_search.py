"""Words of Chinese, Japanese and Korean found inside unspaced text: by conversation search on both databases
(also in messages stored before the search knew CJK, through the migration's backfill), and by the BM25 half
of archival search. The notes and the words searched for are in tests/data/cjk_notes.json."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from membot.agent.memory.cjk import bigrams, index_tokens, query_pieces
from membot.agent.memory.query import query_terms
from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies, rerank
from membot.agent.messages import user_message
from membot.agent.store.agent_data import erase
from membot.agent.store.db import Database
from membot.agent.store.migrate import downgrade, upgrade
from membot.agent.store.passage_text import PassageText
from membot.agent.store.passages import PassageRow, PassageStore
from membot.agent.store.schema import AgentRow
from tests.conftest import EMBEDDING_DIM, store_messages
from tests.fakes.openai_server import embed_text

pytestmark = pytest.mark.both_databases

NOTES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "cjk_notes.json").read_text(encoding="utf-8"))["notes"]
CASES = [(query, note["text"]) for note in NOTES for query in note["queries"]]
ENGLISH = ["I am allergic to peanuts", "my cat is called Millet", "sushi in Tokyo tomorrow with Yamada"]


# ----- the cutting itself (pure) ----------------------------------------------------------------------------


def test_cjk_runs_are_indexed_as_characters_and_bigrams_and_queried_as_bigrams():
    assert bigrams("花生过敏") == ["花生", "生过", "过敏"] and bigrams("猫") == ["猫"]
    assert index_tokens("我对花生过敏") == "我 对 花 生 过 敏 我对 对花 花生 生过 过敏"
    # A word mixing scripts gives its other parts too; punctuation and spaces cut runs.
    assert index_tokens("iPhone15を買った、猫") == "iPhone15 を 買 っ た を買 買っ った 猫"
    assert index_tokens("서울에서 일해요") == "서 울 에 서 서울 울에 에서 일 해 요 일해 해요"
    # Text without CJK adds nothing: English is indexed as it was.
    assert index_tokens("I am allergic to peanuts") is None and index_tokens(None) is None
    assert query_pieces("寿司を") == ["寿司", "司を"] and query_pieces("猫") == ["猫"]
    assert query_pieces("iphone15を") == ["iphone15", "を"] and query_pieces("peanuts") == ["peanuts"]
    assert query_terms("花生过敏 and the peanuts 猫") == ["花生", "生过", "过敏", "peanuts", "猫"]


def test_a_common_cjk_term_adds_its_weight_inside_unspaced_text():
    # Re-ranking by common terms looks for them in the candidates' text (term_stats.rerank): a CJK bigram has
    # no word boundary around it there.
    assert rerank([(1, "花生很好吃", -1.0), (2, "我对花生过敏", -1.0), (3, "今天下雨", -1.5)], {"过敏": 1.0}) == [2, 3, 1]


def test_every_query_word_is_held_by_its_note_alone():
    # The data set itself: each word's terms are among its note's index words, and no other note's.
    for query, said in CASES:
        holders = [n["text"] for n in NOTES if set(query_terms(query)) & set(index_tokens(n["text"]).split())]
        assert holders == [said], query


# ----- conversation search, SQLite and PostgreSQL ------------------------------------------------------------


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


async def _first(recall: RecallMemory, query: str, *, private: bool = True) -> tuple[str | None, int]:
    page = await recall.search(query, private=private)
    return (page.items[0].search_text if page.items else None), page.total


async def test_conversation_search_finds_cjk_words_inside_unspaced_text(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    await store_messages(db, *(user_message(alice, said) for said in [*ENGLISH, *(n["text"] for n in NOTES)]))
    await store_messages(db, user_message(bob, "鲍勃也对花生过敏。"))
    recall = RecallMemory(db, alice, TermFrequencies())
    for query, said in CASES:  # first; the message after it holds it as context (see below)
        assert (await _first(recall, query))[0] == said, query
    # Whole phrases and sentences: the note holding most of their bigrams first.
    assert (await _first(recall, "我对什么过敏？"))[0] == NOTES[0]["text"]
    assert (await _first(recall, "山田さんと寿司"))[0] == NOTES[5]["text"]
    assert (await _first(recall, "제주도 여행"))[0] == NOTES[12]["text"]
    # English is found as before, and a word of no note finds nothing.
    assert (await _first(recall, "peanuts"))[0] == "I am allergic to peanuts"
    assert await _first(recall, "钢琴") == (None, 0)
    # Bob's note stays his.
    assert await _first(RecallMemory(db, bob, TermFrequencies()), "过敏") == ("鲍勃也对花生过敏。", 1)


async def test_a_private_cjk_note_stays_out_of_a_shared_search(db: Database):
    (alice,) = await _agents(db, "alice")
    secret = user_message(alice, "我的密码是秘密的。")
    shared = user_message(alice, "今天在频道里聊了密码学。")
    shared.private = False
    await store_messages(db, secret, shared)
    recall = RecallMemory(db, alice, TermFrequencies())
    assert (await recall.search("密码", private=True)).total == 2
    page = await recall.search("密码", private=False)
    assert [m.search_text for m in page.items] == ["今天在频道里聊了密码学。"]


async def test_a_cjk_note_is_found_through_its_context(db: Database):
    # As English: the message after a note of the same role holds it as context, at half weight.
    (alice,) = await _agents(db, "alice")
    await store_messages(db, user_message(alice, "我对花生过敏。"), user_message(alice, "所以请小心。"))
    found = await RecallMemory(db, alice, TermFrequencies()).search("过敏", private=True)
    assert [m.search_text for m in found.items] == ["我对花生过敏。", "所以请小心。"]


async def test_forgetting_an_agent_takes_its_cjk_words_out_of_the_index(db: Database):
    # SQLite's index is contentless: a row is deleted by the values it was given, CJK words included.
    alice, bob = await _agents(db, "alice", "bob")
    await store_messages(db, user_message(alice, "我对花生过敏。"), user_message(alice, "我对猫过敏。"),
                         user_message(bob, "我也对花生过敏。"))
    await db.write(partial(erase, agent_id=alice))
    if db.is_sqlite:
        hits = await db.read(lambda s: s.execute(text(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH '\"过敏\"'")).scalars().all())
        assert len(hits) == 1
    assert await _first(RecallMemory(db, bob, TermFrequencies()), "过敏") == ("我也对花生过敏。", 1)


# ----- messages stored before the revision --------------------------------------------------------------------


async def test_messages_stored_before_the_revision_are_found_after_it(db: Database):
    await downgrade(db.engine, "0011_threads")
    async with db.engine.begin() as conn:  # plain SQL: the models are ahead of this revision
        agent = (await conn.execute(text(
            """INSERT INTO agents (name, persona_name, human_name, created_at, summary, summary_hidden,
            last_prompt_tokens, archival_passages, token_ratio, pressure_alerted)
            VALUES ('alice', 'p', 'h', CURRENT_TIMESTAMP, '', 0, 0, 0, 1.0, false) RETURNING id"""))).scalar_one()
        for said in ["hello there", NOTES[0]["text"], NOTES[5]["text"], "my cat is called Millet"]:
            await conn.execute(text("""INSERT INTO messages (agent_id, role, kind, search_text, created_at,
                in_context) VALUES (:agent, 'user', 'message', :said, CURRENT_TIMESTAMP, true)"""),
                {"agent": agent, "said": said})
    recall = RecallMemory(db, agent, TermFrequencies())
    with _old_schema():
        assert await _first(recall, "过敏") == (None, 0)  # before: the run is one token
    await upgrade(db.engine)  # the backfill
    assert await _first(recall, "过敏") == (NOTES[0]["text"], 2)  # and the next, by its context
    # The next user message holds the Japanese note as context.
    assert [m.search_text for m in (await recall.search("寿司", private=True)).items] == [
        NOTES[5]["text"], "my cat is called Millet"]
    assert await _first(recall, "cat") == ("my cat is called Millet", 1)
    # Down and up again: English found all along, the CJK words once more at the head.
    await downgrade(db.engine, "0011_threads")
    with _old_schema():
        assert await _first(recall, "Millet") == ("my cat is called Millet", 1)
        assert await _first(recall, "寿司") == (None, 0)
    await upgrade(db.engine)
    assert await _first(recall, "寿司") == (NOTES[5]["text"], 2)


@contextmanager
def _old_schema() -> Iterator[None]:
    """Searches below the revision of entity memory (0014), whose tables are not there yet: without the search's
    entity look-up (the product runs at the head only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecallMemory, "_entity_weights", lambda *args, **kwargs: {})
        yield


# ----- archival search: the BM25 half on Milvus Lite ------------------------------------------------------------


async def test_archival_search_finds_cjk_words_and_an_older_text_index_is_rebuilt(tmp_path: Path):
    uri = str(tmp_path / "milvus.db")

    async def lexical(store: PassageStore, query: str) -> list[str]:
        """Texts found with an embedding far from all of them: only the BM25 half finds these."""
        return [hit.text for hit in await store.search(["agent:1"], query, embed_text("unrelated", EMBEDDING_DIM), 1)]

    store = PassageStore(uri, EMBEDDING_DIM)
    try:
        await store.insert("agent:1", [PassageRow(n["text"], embed_text(f"vector {i}", EMBEDDING_DIM))
                                       for i, n in enumerate(NOTES)])
        await store.flush()
        for query, said in CASES:
            assert await lexical(store, query) == [said], query
    finally:
        await store.close()
    # A text index of the format before the `cjk` column is emptied on open and refilled from Milvus.
    index = tmp_path / "milvus.db.text.sqlite"
    with sqlite3.connect(index) as old:
        old.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    store = PassageStore(uri, EMBEDDING_DIM)
    try:
        assert await lexical(store, "寿司") == [NOTES[5]["text"]]
    finally:
        await store.close()


def test_a_text_index_of_an_earlier_format_is_emptied_when_opened(tmp_path: Path):
    path = tmp_path / "text.sqlite"
    with sqlite3.connect(path) as old:  # the earlier layout: a table without the `cjk` column, marked complete
        old.execute("CREATE TABLE owners (owner TEXT PRIMARY KEY, tbl TEXT NOT NULL)")
        old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        old.execute("CREATE VIRTUAL TABLE text_agent_1 USING fts5(text, filename UNINDEXED, page UNINDEXED, "
                    "doc_hash UNINDEXED, created_at UNINDEXED)")
        old.execute("INSERT INTO owners VALUES ('agent:1', 'text_agent_1'), ('agent:2', 'gone')")
        old.execute("INSERT INTO meta VALUES ('complete', '1')")
    index = PassageText.open(path)
    assert index is not None
    try:
        assert not index.is_complete() and index.search(["agent:1"], "寿司", 5) == []
        index.reset()  # what a rebuild does first: the format stays, so the next open keeps the rows
        index.mark_complete()
    finally:
        index.close()
    index = PassageText.open(path)
    assert index is not None
    try:
        assert index.is_complete()
    finally:
        index.close()
