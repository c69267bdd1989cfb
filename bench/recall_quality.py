"""Recall quality on LoCoMo: does conversation search find the turns that answer a question?

Each LoCoMo conversation becomes one agent's history, sent through the agent turn by turn as a user would
(one `service.chat` per turn, written `[D1:3] (1:56 pm on 8 May, 2023) Caroline: text`, the model answering
send_message("ok") at once). Then every question of categories 1-4 goes to `service.search_memory(user,
question, limit=10)`, which is what `membot memory search --user <conv> --limit 10` and the agent's
conversation_search run. A question counts as found at k when any of its evidence turns (its `[D1:3]` tag)
is in one of the first k result lines.

Baseline, same turns, same questions: a plain BM25 of our own (words as `\\w+`, lower-cased, no stemming,
no stop words), the reference the data's README quotes (~57% at 10 over all ten conversations).

The agents run with an 8,192-token window (the product's default for unknown models): the window does not
change what recall memory holds, and a bigger one only makes each of the ~2,800 steps slower.

It runs on SQLite, then on PostgreSQL (a database of its own on the server BENCH_POSTGRES_URL names, by
default the local one; `none` leaves it out): the two conversation searches are measured on the same turns.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench import DATA, Row, Target, drain, log, open_service, scripted_model, user
from bench.postgres import postgres_database, postgres_server

NAME = "recall quality"
LOCOMO = DATA / "locomo" / "locomo_dev.json"
CATEGORIES = (1, 2, 3, 4)
_DIA = re.compile(r"D\d+:\d+")
_TAG = re.compile(r"\[(D\d+:\d+)\]")
_WORD = re.compile(r"\w+")


def turns(sample: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(dia_id, the line sent to the agent) for every turn of a conversation, in order."""
    conversation = sample["conversation"]
    sessions = sorted(
        (int(key.split("_")[1]), key)
        for key, value in conversation.items()
        if re.fullmatch(r"session_\d+", key) and isinstance(value, list)
    )
    for number, key in sessions:
        when = conversation.get(f"session_{number}_date_time", "")
        for turn in conversation[key]:
            yield turn["dia_id"], f"[{turn['dia_id']}] ({when}) {turn['speaker']}: {turn['text']}"


def questions(sample: dict[str, Any], sent: set[str]) -> list[tuple[str, set[str]]]:
    """(question, evidence dia_ids) of categories 1-4 whose evidence was all sent. Evidence entries are
    sometimes written "D8:6; D9:17", so ids are pulled out by pattern."""
    found = []
    for qa in sample["qa"]:
        if qa.get("category") not in CATEGORIES:
            continue
        evidence = {dia for entry in qa.get("evidence") or [] for dia in _DIA.findall(str(entry))}
        if evidence and evidence <= sent:
            found.append((str(qa["question"]), evidence))
    return found


class BM25:
    """Okapi BM25 (k1 1.2, b 0.75) over a fixed list of documents."""

    def __init__(self, documents: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = [Counter(_WORD.findall(d.lower())) for d in documents]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.average = sum(self.lengths) / len(self.docs)
        frequency: Counter[str] = Counter()
        for doc in self.docs:
            frequency.update(doc.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}
        self.k1, self.b = k1, b

    def top(self, query: str, k: int) -> list[int]:
        terms = _WORD.findall(query.lower())
        scores = []
        for index, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            score = 0.0
            for term in terms:
                tf = doc.get(term, 0)
                if tf:
                    norm = self.k1 * (1 - self.b + self.b * length / self.average)
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            if score > 0:
                scores.append((-score, index))
        return [index for _, index in sorted(scores)[:k]]


async def run(quick: bool) -> list[Row]:
    samples = json.loads(LOCOMO.read_text())
    samples, cap = (samples[:1], 80) if quick else (samples, None)
    rows = await _measure("SQLite", {}, samples, cap)
    server = postgres_server()
    if server is not None:
        async with postgres_database(server, "quality") as url:
            rows += await _measure("PostgreSQL", {"MEMBOT_DATABASE_URL": url}, samples, cap)
    return rows


async def _measure(label: str, env: dict[str, str], samples: list[dict[str, Any]], cap: int | None) -> list[Row]:
    agent_at = {5: 0, 10: 0}
    bm25_at = {5: 0, 10: 0}
    asked = sent_total = 0
    started = time.perf_counter()
    talking = 0.0
    async with scripted_model("ok") as model, open_service(model, MEMBOT_CONTEXT_WINDOW=8192, **env) as service:
        for sample in samples:
            who = user(sample["sample_id"])
            lines = list(turns(sample))[:cap]
            t0 = time.perf_counter()
            for _, line in lines:
                await drain(service.chat(who, line))
            talking += time.perf_counter() - t0
            sent_total += len(lines)
            index = BM25([line for _, line in lines])
            ids = [dia for dia, _ in lines]
            asked_here = questions(sample, set(ids))
            for question, evidence in asked_here:
                results = await service.search_memory(who, question, limit=10)
                ranked = [_TAG.findall(line) for line in results]
                baseline = [[ids[i]] for i in index.top(question, 10)]
                for k in (5, 10):
                    agent_at[k] += any(evidence & set(tags) for tags in ranked[:k])
                    bm25_at[k] += any(evidence & set(tags) for tags in baseline[:k])
            asked += len(asked_here)
            log(f"{label}, {sample['sample_id']}: {len(lines)} turns, {len(asked_here)} questions, "
                f"{time.perf_counter() - started:.0f} s so far")
    pct = {k: 100 * v / asked for k, v in agent_at.items()}
    base = {k: 100 * v / asked for k, v in bm25_at.items()}
    note = (f"{agent_at[10]}/{asked} questions; {len(samples)} conversations, {sent_total:,} turns sent through "
            f"the agent in {talking:.0f} s")
    return [
        Row(NAME, f"{label}: evidence turn in the top 10 (any@10)", pct[10], "%", base[10],
            "plain BM25, same turns", Target(">=", 70.0, label="70%"), note=note),
        Row(NAME, f"{label}: evidence turn in the top 5 (any@5)", pct[5], "%", base[5], "plain BM25, same turns"),
    ]
