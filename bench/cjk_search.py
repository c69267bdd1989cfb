"""Search in Chinese, Japanese and Korean: do the words a user would search with find their note?

The notes of tests/data/cjk_notes.json (13 notes, 26 words of one to five characters, ten of them one or two
characters long) are told to the agent one message each, through `service.chat` as a user would, beside a
few English messages; then each word goes to `service.search_memory(user, word, limit=10)` (what `membot
memory search` and conversation_search run). A word counts as found at k when its note is in the first k
results. The same words then search the BM25 half of archival search on Milvus Lite (passage_text.py, the
notes as one owner's passages), where only the first hit is asked for.

No baseline in the same run: the figures before CJK search are those of the code before it (bench/README.md).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bench import ROOT, Row, drain, log, open_service, scripted_model, user
from bench.postgres import postgres_database, postgres_server
from membot.agent.store.passage_text import PassageText, TextRow

NAME = "CJK search"
NOTES: list[dict[str, Any]] = json.loads((ROOT / "tests" / "data" / "cjk_notes.json").read_text("utf-8"))["notes"]
ENGLISH = ["I am allergic to peanuts", "my cat is called Millet", "sushi in Tokyo tomorrow with Yamada"]


def _cases() -> list[tuple[str, str]]:
    return [(query, note["text"]) for note in NOTES for query in note["queries"]]


async def run(quick: bool) -> list[Row]:
    rows = await _conversation("SQLite", {})
    server = postgres_server()
    if server is not None:
        async with postgres_database(server, "cjk") as url:
            rows += await _conversation("PostgreSQL", {"MEMBOT_DATABASE_URL": url})
    return rows + _archival()


async def _conversation(label: str, env: dict[str, str]) -> list[Row]:
    cases = _cases()
    at = {1: 0, 10: 0}
    async with scripted_model("ok") as model, open_service(model, **env) as service:
        who = user("cjk")
        for said in [*ENGLISH, *(note["text"] for note in NOTES)]:
            await drain(service.chat(who, said))
        for query, said in cases:
            results = await service.search_memory(who, query, limit=10)
            at[1] += bool(results) and said in results[0]
            at[10] += any(said in line for line in results)
    log(f"{label}: {at[10]}/{len(cases)} words found")
    note = f"{len(cases)} words of {len(NOTES)} notes (zh, ja, ko), one message each"
    return [
        Row(NAME, f"conversation search, {label}: note in the top 10", 100 * at[10] / len(cases), "%", note=note),
        Row(NAME, f"conversation search, {label}: note first", 100 * at[1] / len(cases), "%"),
    ]


def _archival() -> list[Row]:
    cases = _cases()
    with tempfile.TemporaryDirectory(prefix="membot-bench-") as tmp:
        index = PassageText.open(Path(tmp) / "text.sqlite")
        assert index is not None, "this SQLite has no FTS5"
        try:
            index.add("agent:1", [TextRow(i, note["text"], "", 0, "", 0.0) for i, note in enumerate(NOTES, 1)])
            found = sum(bool(hits) and hits[0].row.text == said
                        for query, said in cases for hits in [index.search(["agent:1"], query, 1)])
        finally:
            index.close()
    return [Row(NAME, "archival BM25 half (Milvus Lite's FTS5): note first", 100 * found / len(cases), "%",
                note=f"{len(cases)} words, the {len(NOTES)} notes as passages")]
