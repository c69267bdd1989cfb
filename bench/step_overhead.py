"""Step overhead: what membot itself adds to each model call, with a model that answers at once.

Each user message runs a chain of two model calls (core_memory_append with a heartbeat, then send_message),
on SQLite, then on PostgreSQL (a database of its own on the server BENCH_POSTGRES_URL names; `none` to leave it
out), with Milvus Lite. Right after each message, the two requests the server just received are sent again,
byte for byte, as bare HTTP POSTs: that is the cost of HTTP and the fake server for exactly those payloads.
What is left, per model call, is membot's own time (prompt building, commits, tool runs).

Samples are spread over several users with short histories, so prompts stay the size of a fresh
conversation; with long ones, the HTTP cost grows with the payload on both sides alike.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from bench import (
    BareHttp,
    Row,
    Target,
    drain,
    log,
    ms,
    open_service,
    percentile,
    scripted_model,
    stopwatch,
    user,
)
from bench.postgres import postgres_database, postgres_server
from membot.bot.service import BotService

NAME = "step overhead"


async def run(quick: bool) -> list[Row]:
    rows = await _measure(quick, "SQLite")
    server = postgres_server()
    if server is not None:
        async with postgres_database(server, "steps") as url:
            rows += await _measure(quick, "PostgreSQL", MEMBOT_DATABASE_URL=url)
    return rows


async def _measure(quick: bool, database: str, **env: str) -> list[Row]:
    users, warmup, measured = (3, 1, 3) if quick else (20, 2, 10)
    async with scripted_model("chain") as model, open_service(model, **env) as service:
        bare = BareHttp(model.base_url)
        # Counted to explain the figure.
        statements = [0]

        def count_statement(*_: Any) -> None:
            statements[0] += 1

        event.listen(Engine, "before_cursor_execute", count_statement)  # every engine of this process
        steps: list[float] = []  # seconds per user message
        calls: list[int] = []  # model calls per user message (expected: 2)
        replays: list[float] = []  # seconds for the same requests as bare HTTP
        minimal: list[float] = []  # seconds for the smallest possible request
        for round_ in range(warmup + measured):
            for index in range(users):
                who = user(f"step-{index}")
                before = len(model.requests)
                with stopwatch() as step:
                    await drain(service.chat(who, f"Message {round_} from user {index}: I like tea."))
                sent = model.requests[before:]
                if round_ < warmup:
                    statements[0] = 0
                    continue  # first contact creates and loads the agent: not a step's cost
                steps.append(step[0])
                calls.append(len(sent))
                replays.append(await _replay(bare, sent))
                minimal.append(await _minimal(bare))
        await bare.close()
        sql_count = statements[0]
        statement, raw_statement = await _sql_round_trip(service, 200 if quick else 1000)

    per_call = [s / c for s, c in zip(steps, calls, strict=True)]
    per_call_bare = [r / c for r, c in zip(replays, calls, strict=True)]
    own = [(s - r) / c for s, r, c in zip(steps, replays, calls, strict=True)]
    n = len(steps)
    note = f"{database}; {n} messages, {sum(calls) / n:.1f} model calls each, {users} users"
    log(f"{note}; step p50 {ms(percentile(steps, 50)):.1f} ms")
    name = f"{NAME}, {database}"
    bare_label = "bare HTTP, same payloads"
    return [
        Row(name, "user message, p50", ms(percentile(steps, 50)), "ms", ms(percentile(replays, 50)), bare_label,
            note=note),
        Row(name, "user message, p95", ms(percentile(steps, 95)), "ms", ms(percentile(replays, 95)), bare_label),
        Row(name, "per model call (message ÷ calls), p50", ms(percentile(per_call, 50)), "ms",
            ms(percentile(per_call_bare, 50)), "bare round trip per call"),
        Row(name, "own time per model call, p50", ms(percentile(own, 50)), "ms",
            ms(percentile(per_call_bare, 50)), "bare round trip per call",
            Target("<=", 5.0, label="5 ms")),
        Row(name, "own time per model call, p95", ms(percentile(own, 95)), "ms",
            ms(percentile(per_call_bare, 95)), "bare round trip per call"),
        Row(name, "bare round trip, one-line request, p50", ms(percentile(minimal, 50)), "ms",
            note="HTTP + fake server, no tools; for scale"),
        Row(name, "SQL statements per user message", sql_count / n, "",
            note="a step's lease, its commits (each checks the lease), reads"),
        Row(name, "one unit of work (SELECT 1) via the product's Database, p50", ms(statement), "ms",
            ms(raw_statement) if database == "SQLite" else None,
            "plain sqlite3, same statement" if database == "SQLite" else ""),
    ]


async def _sql_round_trip(service: BotService, repeat: int) -> tuple[float, float]:
    """p50 seconds of a trivial statement through the product's async session, and through sqlite3 directly:
    the fixed price of every statement a step runs."""
    samples: list[float] = []
    select_one = text("SELECT 1")
    for _ in range(repeat):
        with stopwatch() as elapsed:
            await service.engine.db.scalar(select_one)
        samples.append(elapsed[0])
    raw: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "plain.db")
        for _ in range(repeat):
            with stopwatch() as elapsed:
                conn.execute("SELECT 1").fetchall()
            raw.append(elapsed[0])
        conn.close()
    return percentile(samples, 50), percentile(raw, 50)


async def _replay(client: BareHttp, bodies: list[dict[str, Any]]) -> float:
    """Seconds to send these exact request bodies again, one after the other, as bare HTTP POSTs: the HTTP
    and fake server's cost of those calls."""
    with stopwatch() as elapsed:
        for body in bodies:
            await client.post(body)
    return elapsed[0]


async def _minimal(client: BareHttp) -> float:
    with stopwatch() as elapsed:
        await client.hello()
    return elapsed[0]
