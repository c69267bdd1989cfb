"""Conversation search: the ranked recall search (`conversation_search`, `membot memory search`) over a long
history of one agent, beside a plain `LIKE '%term%'` scan of the same table in the same database.

The history is bulk-inserted (100,000 steps through the agent would take hours and measure something else):
rows built by the product's own `user_message`, so the FTS index is filled by its own trigger. Texts are
LoCoMo dialogue turns with a few other words of the corpus added, so that terms have the spread of real
conversation; queries are LoCoMo questions.
"""

from __future__ import annotations

import json
import random
import time

from sqlalchemy import text

from bench import DATA, Row, Target, log, ms, open_service, percentile, scripted_model, stopwatch, user
from membot.agent.memory.query import query_terms
from membot.agent.memory.recall import _FTS_RANKED, RecallMemory
from membot.agent.memory.term_stats import fts_phrase
from membot.agent.messages import user_message

NAME = "conversation search"
LOCOMO = DATA / "locomo" / "locomo_dev.json"
CHUNK = 10_000
# A search can take seconds at this size; past this much time spent, stop (after a minimum of queries).
SEARCH_BUDGET_S = 45.0
MIN_QUERIES = 5
_LIKE = text("SELECT id, search_text FROM messages WHERE agent_id = :agent_id AND search_text LIKE :pattern")


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


async def run(quick: bool) -> list[Row]:
    total, queries = (5_000, 20) if quick else (100_000, 100)
    turns, questions = _corpus()
    words = " ".join(turns).split()
    rng = random.Random(11)
    probe = questions[:queries]
    async with scripted_model() as model, open_service(model) as service:
        who = user("long-talker")
        agent_id, _ = await service.agent_id(who)
        recall = RecallMemory(service.engine.db, agent_id, service.engine.terms)
        with stopwatch() as fill:
            for start in range(0, total, CHUNK):
                rows = [
                    user_message(agent_id, f"{turns[i % len(turns)]} {' '.join(rng.choices(words, k=5))}")
                    for i in range(start, min(total, start + CHUNK))
                ]
                await service.engine.db.write(lambda session, rows=rows: recall.add(session, *rows))
                log(f"inserted {start + len(rows):,} messages")
        await service.search_memory(who, probe[0])  # load the agent and warm SQLite's page cache
        searched: list[float] = []
        paged: list[float] = []
        scanned: list[float] = []
        deadline = time.perf_counter() + SEARCH_BUDGET_S
        for question in probe:
            with stopwatch() as t:
                lines = await service.search_memory(who, question, limit=10)
            searched.append(t[0])
            if not lines:
                log(f"no result for {question!r}")
            if len(searched) >= MIN_QUERIES and time.perf_counter() > deadline:
                log(f"stopped after {len(searched)} searches (time budget)")
                break
        for question in probe:
            terms = query_terms(question) or ["the"]
            # Every term ranked in full, as before the common-terms split (see memory/term_stats.py).
            match = " OR ".join(map(fts_phrase, terms))
            with stopwatch() as t:
                await service.engine.db.rows(
                    _FTS_RANKED.bindparams(query=match, agent_id=agent_id, limit=10)
                )
            paged.append(t[0])
            with stopwatch() as t:
                await service.engine.db.rows(_LIKE.bindparams(agent_id=agent_id, pattern=f"%{terms[0]}%"))
            scanned.append(t[0])
    note = f"{total:,} messages of one agent, {len(searched)} LoCoMo questions, top 10"
    base = "LIKE '%term%' scan, first term"
    return [
        Row(NAME, "service.search_memory, p50", ms(percentile(searched, 50)), "ms", ms(percentile(scanned, 50)),
            base, Target("<=", 10.0, label="10 ms"), note=note),
        Row(NAME, "service.search_memory, p95", ms(percentile(searched, 95)), "ms", ms(percentile(scanned, 95)),
            base),
        Row(NAME, "one query ranking every term in full, p50", ms(percentile(paged, 50)), "ms",
            ms(percentile(scanned, 50)), base, note=f"{len(paged)} questions; what the search did before rare "
            "terms found the candidates and common ones only re-ranked them"),
        Row(NAME, "bulk insert rate (recall memory's insert + FTS trigger)", total / fill[0], "rows/s"),
    ]

