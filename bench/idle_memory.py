"""Idle memory: the resident memory of a bot process with many stored agents, after some have talked.

The measured process is a child that imports only membot (not the benchmarks, not pytest): this file is run
as a script there, so its top level must import nothing from `bench` or `tests`. The scripted model runs in
the parent, so it costs the child nothing. RSS is read from /proc/self/status (VmRSS).

The archival store (Milvus Lite, in-process) opens on first use; the talk does not use it, so its cost is
reported on its own row, after one archival search.

Agents: the first ones are created through `BotService.agent_id`, as first contact does (that rate is
reported); the rest are written as rows in bulk (the same rows `Engine.new_agent` and `create_linked`
write), since creating 10,000 one by one would spend the time budget on something else.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench import Row

NAME = "idle memory"
ONE_BY_ONE = 500
BULK_CHUNK = 1_000


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def run(quick: bool) -> list[Row]:
    from bench import ROOT, Row, Target, log, scripted_model

    agents, talkers = (600, 10) if quick else (10_000, 100)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="membot-bench-") as home:
        async with scripted_model("ok") as model:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, model.base_url, home, str(agents), str(talkers),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the measured process failed: {err.decode()[-2000:]}")
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    log(json.dumps(figures))
    note = f"{agents:,} agents stored, {talkers} talked once"
    return [
        Row(NAME, "RSS after the talk", figures["talked"], "MB", figures["open"], "RSS right after opening",
            Target("<=", 150.0, label="150 MB"), note=note),
        Row(NAME, "RSS with the agents stored, before any talk", figures["created"], "MB", figures["open"],
            "RSS right after opening"),
        Row(NAME, "RSS after imports, before opening", figures["imports"], "MB"),
        Row(NAME, "RSS once an agent has stored and searched a passage", figures["archival"], "MB", figures["open"],
            "RSS right after opening", note="Milvus Lite (pymilvus, pyarrow, its gRPC server) opens on first use, "
            "in this process"),
        Row(NAME, "agents created one by one (service.agent_id)", figures["create_rate"], "agents/s",
            note=f"first {figures['one_by_one']}"),
    ]


# ----- the measured process ----------------------------------------------------------------------------------


async def _child(url: str, home: str, agents: int, talkers: int) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from membot.agent import prompts
    from membot.agent.store.schema import AgentRow, BlockRow, IdentityRow
    from membot.bot.identity import UserRef
    from membot.bot.service import BotService
    from membot.bot.settings import Settings

    figures: dict[str, Any] = {"imports": rss_mb()}
    # The values tests.conftest.make_settings sets; written out so this process needn't import pytest.
    settings = Settings(
        _env_file=None,
        OPENAI_API_KEY="sk-test-not-a-real-key",
        OPENAI_BASE_URL=url,
        MEMBOT_HOME=home,
        MEMBOT_EMBEDDING_DIM=64,
        MEMBOT_CONTEXT_WINDOW=16_000,
        MEMBOT_MODEL_MAX_RETRIES=0,
    )
    service = await BotService.open(settings)
    figures["open"] = rss_mb()

    def who(i: int) -> UserRef:
        return UserRef("terminal", "local", f"idle-{i}", f"idle-{i}")

    one_by_one = min(ONE_BY_ONE, agents)
    start = time.perf_counter()
    for i in range(one_by_one):
        await service.agent_id(who(i))
    figures["create_rate"] = one_by_one / (time.perf_counter() - start)
    figures["one_by_one"] = one_by_one

    persona = prompts.load("personas", settings.default_persona)
    human = prompts.load("humans", settings.default_human)
    limit = settings.core_memory_limit

    def store(batch: range, session: Session) -> None:
        rows = [AgentRow(name=who(i).label, persona_name=settings.default_persona,
                         human_name=settings.default_human) for i in batch]
        session.add_all(rows)
        session.flush()  # assigns the agent ids the other rows point at
        for i, row in zip(batch, rows, strict=True):
            session.add(BlockRow(agent_id=row.id, label="persona", value=persona, char_limit=limit))
            session.add(BlockRow(agent_id=row.id, label="human", value=human, char_limit=limit))
            session.add(IdentityRow(platform="terminal", scope="local", user_id=f"idle-{i}",
                                    display_name=f"idle-{i}", agent_id=row.id))

    for first in range(one_by_one, agents, BULK_CHUNK):
        await service.engine.db.write(partial(store, range(first, min(agents, first + BULK_CHUNK))))
    gc.collect()
    figures["created"] = rss_mb()

    step = max(1, agents // talkers)
    for i in range(0, step * talkers, step):
        async for _ in service.chat(who(i), "Hello! How are you today?"):
            pass
    gc.collect()
    figures["talked"] = rss_mb()
    # Milvus Lite opens on the first archival call and runs in this process: what that adds, for the record.
    agent_id, _ = await service.agent_id(who(0))
    async with service.using(agent_id) as agent:
        await agent.archival.insert("The user asked how I am, on their first day.", private=True)
    await service.search_memory(who(0), "how are you", archival=True)
    gc.collect()
    figures["archival"] = rss_mb()
    await service.close()
    return figures


if __name__ == "__main__":
    url_, home_, agents_, talkers_ = sys.argv[1:5]
    result = asyncio.run(_child(url_, home_, int(agents_), int(talkers_)))
    print(json.dumps(result))

