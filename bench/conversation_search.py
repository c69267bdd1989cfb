"""Conversation search on both databases: `RecallMemory.search` (what the agent's conversation_search runs,
page 0 of 5 results) over 1,000,000 messages of 1,000 agents, beside a plain `LIKE '%term%'` scan of the
searching agent's messages in the same database.

The messages are bulk-loaded (a million steps through the agent would take days and measure something else),
the agents' turns interleaved as they would be in time, each message built by the product's `user_message`
so that each database's own trigger indexes it: on SQLite an executemany INSERT with the FTS5 trigger; on
PostgreSQL COPY with the search trigger active (the vectors are the ones the product computes, row by row).
Texts are LoCoMo dialogue turns with a few other words of the corpus added, so that terms have the spread of
real conversation; queries are LoCoMo questions, each asked of another agent, first with no term counts
cached (as in a process just started), then again with them, beside the same ranking without the rare/common
split.

BENCH_CONVERSATION_MESSAGES changes the size (1,000 messages an agent); BENCH_POSTGRES_URL names the
PostgreSQL server (default the local one; `none` to run SQLite only).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import insert, text

from bench import DATA, Row, Target, log, ms, open_service, percentile, scripted_model, stopwatch, user
from bench.postgres import postgres_database, postgres_server
from membot.agent.memory import recall_pg
from membot.agent.memory.paging import PAGE_SIZE
from membot.agent.memory.query import query_terms
from membot.agent.memory.recall import _FTS_RANKED, RecallMemory, fts_query
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import Message, user_message
from membot.agent.store.db import Database
from membot.agent.store.schema import MessageRow

NAME = "conversation search"
LOCOMO = DATA / "locomo" / "locomo_dev.json"
FULL_SIZE = 1_000_000
PER_AGENT = 1_000
CHUNK = 20_000
QUERIES = 200
_COPIED = ("agent_id", "role", "kind", "content", "search_text", "created_at", "in_context")
_LIKE = {
    "sqlite": text("SELECT id, search_text FROM messages WHERE agent_id = :agent_id AND search_text LIKE :pattern"),
    "postgresql": text(
        "SELECT id, search_text FROM messages WHERE agent_id = :agent_id AND search_text ILIKE :pattern"
    ),
}


def _corpus() -> tuple[list[str], list[str]]:
    """(turn texts, questions of categories 1-4) of the LoCoMo conversations."""
    turns, questions = [], []
    for sample in json.loads(LOCOMO.read_text()):
        conversation = sample["conversation"]
        for key, value in conversation.items():
            if key.startswith("session_") and isinstance(value, list):
                turns.extend(f"{turn['speaker']}: {turn['text']}" for turn in value)
        questions.extend(q["question"] for q in sample["qa"] if q.get("category") in (1, 2, 3, 4))
    return turns, questions


def _history(agents: list[int], turns: list[str]) -> Iterator[list[Message]]:
    """Every agent's messages in chunks, the agents taking turns as they would over time; the same texts for
    both databases."""
    rng = random.Random(11)
    words = " ".join(turns).split()
    chunk: list[Message] = []
    for step in range(PER_AGENT):
        for n, agent_id in enumerate(agents):
            said = f"{turns[(n * 7919 + step) % len(turns)]} {' '.join(rng.choices(words, k=5))}"
            chunk.append(user_message(agent_id, said))
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def _fill(db: Database, agents: list[int], turns: list[str]) -> None:
    done = 0
    for chunk in _history(agents, turns):
        records = [tuple(getattr(message, column) for column in _COPIED) for message in chunk]
        if db.is_sqlite:
            # One executemany, without the RETURNING of recall memory's insert: no ids are needed here.
            values = [dict(zip(_COPIED, record, strict=True)) for record in records]
            await db.write(lambda session, values=values: session.execute(insert(MessageRow), values))
        else:
            async with db.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                await raw.driver_connection.copy_records_to_table("messages", records=records, columns=_COPIED)
        done += len(chunk)
        if done % 100_000 < CHUNK:
            log(f"{db.dialect}: {done:,} messages")
    if not db.is_sqlite:
        # What autovacuum does after a load like this (this machine's server runs without it): a vacuum, which
        # inserts start since PostgreSQL 13, and the planner's statistics, which also give the counts of the
        # commonest words (see term_stats).
        async with db.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("VACUUM ANALYZE messages")


async def _timed(calls: list[Callable[[], Any]]) -> list[float]:
    times = []
    for call in calls:
        with stopwatch() as t:
            await call()
        times.append(t[0])
    return times


async def _measure(label: str, url: str | None, total: int, queries: int) -> list[Row]:
    turns, questions = _corpus()
    env = {"MEMBOT_DATABASE_URL": url} if url else {}
    async with scripted_model() as model, open_service(model, **env) as service:
        db, terms = service.engine.db, service.engine.terms
        agents = [(await service.agent_id(user(f"talker-{n}")))[0] for n in range(max(1, total // PER_AGENT))]
        with stopwatch() as fill:
            await _fill(db, agents, turns)
        asked = [(agents[(i * 37) % len(agents)], questions[i % len(questions)]) for i in range(queries)]
        await RecallMemory(db, agents[-1], terms).search("warm up the connections", private=True)
        split = [lambda a=agent_id, q=question: RecallMemory(db, a, terms).search(q, private=True) for agent_id, question in asked]
        searched = await _timed(split)
        # Again with the counts cached, beside the same query with every term finding the messages; taken in
        # turns so that neither gains from the other's reads.
        full = [lambda a=agent_id, q=question: db.read(lambda session: _in_full(session, a, q, terms))
                for agent_id, question in asked]
        again, in_full = [], []
        for turn, (one, other) in enumerate(zip(split, full, strict=True)):
            if turn % 2:
                one_t, other_t = await _timed([one, other])
            else:
                other_t, one_t = await _timed([other, one])
            again.append(one_t)
            in_full.append(other_t)
        like = _LIKE[db.dialect]
        scanned = await _timed([
            lambda a=agent_id, q=question: db.rows(like.bindparams(agent_id=a, pattern=f"%{_first(q)}%"))
            for agent_id, question in asked
        ])
    size = f"{len(agents) * PER_AGENT:,} messages of {len(agents):,} agents, {queries} LoCoMo questions"
    base = "LIKE '%term%' scan of the agent's messages, first term"
    return [
        Row(NAME, f"{label}: RecallMemory.search, p50", ms(percentile(searched, 50)), "ms",
            ms(percentile(scanned, 50)), base, Target("<=", 20.0, label="20 ms"), note=f"{size}, term counts not yet cached"),
        Row(NAME, f"{label}: RecallMemory.search, p95", ms(percentile(searched, 95)), "ms",
            ms(percentile(scanned, 95)), base, Target("<=", 60.0, label="60 ms")),
        Row(NAME, f"{label}: the same again, term counts cached, p50", ms(percentile(again, 50)), "ms",
            ms(percentile(in_full, 50)), "every term finding the messages (no rare/common split)"),
        Row(NAME, f"{label}: the same again, p95", ms(percentile(again, 95)), "ms", ms(percentile(in_full, 95)),
            "every term finding the messages (no rare/common split)"),
        Row(NAME, f"{label}: bulk load, messages indexed by the trigger", len(agents) * PER_AGENT / fill[0],
            "rows/s", note="executemany INSERT" if url is None else "COPY"),
    ]


def _first(question: str) -> str:
    return (query_terms(question) or ["the"])[0]


def _in_full(session: Any, agent_id: int, question: str, terms: TermFrequencies) -> Any:
    """The ranked query with every term finding the messages, as before the rare/common split (term_stats)."""
    words = query_terms(question) or ["the"]
    if session.get_bind().dialect.name == "sqlite":
        params = {"query": fts_query(agent_id, words), "agent_id": agent_id, "limit": PAGE_SIZE, "private": True}
        return session.execute(_FTS_RANKED, params).all()
    return recall_pg.ranked(session, agent_id, words, PAGE_SIZE, terms, split=False, private=True)


async def run(quick: bool) -> list[Row]:
    total = 5_000 if quick else int(os.environ.get("BENCH_CONVERSATION_MESSAGES", FULL_SIZE))
    queries = 20 if quick else QUERIES
    rows = await _measure("SQLite", None, total, queries)
    server = postgres_server()
    if server is not None:
        async with postgres_database(server, "search") as url:
            rows += await _measure("PostgreSQL", url, total, queries)
    return rows
