"""Ingestion: the MemGPT paper (13-page PDF) loaded as a data source, as an upload is, with embeddings that
come back at once (1,536 dimensions, the product's default), beside pypdf's bare text extraction of the same
file in the same run: the floor any PDF loader built on pypdf stands on.

Loads and extractions alternate so both see the same machine load; each load goes into a new source (the
same file twice in one source is a duplicate and would load nothing).
"""

from __future__ import annotations

import asyncio
import io
import statistics
from typing import Any

from pypdf import PdfReader

from bench import DATA, BareHttp, Row, Target, log, ms, open_service, scripted_model, stopwatch, user
from tests.fakes.openai_server import ScriptedModel

NAME = "ingestion"
PAPER = DATA / "memgpt_paper.pdf"


def _bare_extract(data: bytes) -> int:
    """pypdf alone: open the file and extract every page's text. Returns the characters extracted."""
    reader = PdfReader(io.BytesIO(data))
    return sum(len(page.extract_text() or "") for page in reader.pages)


async def run(quick: bool) -> list[Row]:
    repeats = 1 if quick else 3
    data = PAPER.read_bytes()
    loads: list[float] = []
    bare: list[float] = []
    embed_share: list[float] = []
    passages = pages = 0
    async with scripted_model(embedding_latency=0.0) as model, open_service(model, MEMBOT_EMBEDDING_DIM=1536) as service:
        who = user("reader")
        await service.agent_id(who)
        # The archival store opens on first use (~1-2 s, with background work after it); a bot that loads
        # files has it open already, so it is opened, and given a moment to settle, before timing.
        with stopwatch() as opening:
            await service.engine.passages.ready()
        await asyncio.sleep(2.0)
        for attempt in range(repeats):
            with stopwatch() as extract:
                # In a thread, as the loader parses: the same GIL and thread hop on both sides.
                chars = await asyncio.to_thread(_bare_extract, data)
            bare.append(extract[0])
            served = len(model.embedding_requests)
            with stopwatch() as load:
                outcome, events = await service.load_file(who, PAPER.name, data, source_name=f"paper-{attempt}")
            loads.append(load[0])
            if outcome.failed:
                raise RuntimeError(f"the paper did not load: {outcome.reason}")
            passages, pages = outcome.passages, outcome.pages
            # How much of the load was the fake embedding server's work, for the reader of a missed target.
            embed_share.append(await _embedding_time(model, model.embedding_requests[served:]))
            async for _ in events:  # the agent's reaction to the attached source is not part of loading
                break
    log(f"{pages} pages, {passages} passages, {chars} characters; load p50 {ms(statistics.median(loads)):.0f} ms")
    note = f"{pages} pages → {passages} passages, median of {repeats}"
    log(f"archival store opened in {opening[0]:.2f} s before timing")
    return [
        Row(NAME, "load the paper (parse, chunk, embed, store)", ms(statistics.median(loads)), "ms",
            ms(statistics.median(bare)), "pypdf extract_text, all pages", Target("<=", 1.5, on="ratio", label="1.5×"),
            note=note),
        Row(NAME, "of which embedding round trips (bare HTTP, same inputs)", ms(statistics.median(embed_share)),
            "ms", note="1,536-d, fake server computes hashed vectors"),
        Row(NAME, "passages stored", float(passages), ""),
    ]


async def _embedding_time(model: ScriptedModel, bodies: list[dict[str, Any]]) -> float:
    """Seconds to send the same embedding requests again as bare HTTP POSTs."""
    client = BareHttp(model.base_url)
    with stopwatch() as elapsed:
        for body in bodies:
            await client.post(body, "/embeddings")
    await client.close()
    return elapsed[0]
