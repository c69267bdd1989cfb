"""Archival memory shared: one Milvus Lite server per file for every process, reads that see one's own writes,
and deployments that share a Milvus without seeing each other's passages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from membot.agent.events import FunctionResult
from membot.agent.memory.archival import _total
from membot.agent.store.db import Database
from membot.agent.store.lite_shared import LiteFiles, SharedLite, server_alive
from membot.agent.store.passages import PassageRow, PassageStore, PassageStoreError
from membot.agent.store.schema import DeploymentRow
from membot.bot.service import BotService
from tests.conftest import EMBEDDING_DIM, collect, make_settings
from tests.fakes.openai_server import embed_text, send, tool_call
from tests.milvus_server import _listeners, _own_sockets

DIM = EMBEDDING_DIM
OLD_DB = Path(__file__).parent / "data" / "membot-d228cc3.db"
PROJECT = Path(__file__).resolve().parents[1]


def row(words: str) -> PassageRow:
    return PassageRow(words, embed_text(words, DIM))


async def texts(store: PassageStore, owners: list[str], query: str) -> list[str]:
    return [hit.text for hit in await store.search(owners, query, embed_text(query, DIM), 10)]


# ----- one Milvus Lite server per file ---------------------------------------------------------------------

OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from membot.agent.store.passages import PassageRow, PassageStore
    from tests.fakes.openai_server import embed_text

    async def main():
        store = PassageStore(sys.argv[1], int(sys.argv[2]))
        words = "the loaded manual says to water ferns weekly"
        await store.insert("source:3", [PassageRow(words, embed_text(words, int(sys.argv[2])))])
        await store.flush()
        hits = await store.search(["agent:1"], "kept", embed_text("kept", int(sys.argv[2])), 5)
        print("|".join(hit.text for hit in hits))
        await store.close()

    asyncio.run(main())
    """
)


async def test_two_processes_share_one_lite_file(tmp_path: Path) -> None:
    """A load beside `serve`: another process writes while this one has the store open, and both see it all."""
    uri = tmp_path / "milvus.db"
    store = PassageStore(str(uri), DIM)
    try:
        await store.insert("agent:1", [row("alice kept the receipt")])
        await store.flush()
        other = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", OTHER_PROCESS, str(uri), str(DIM)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=PROJECT,
        )
        assert other.returncode == 0, other.stderr[-2000:]
        assert other.stdout.strip() == "alice kept the receipt"
        # Its partition and its text table were made by the other process: found at once, by meaning and by word.
        assert await texts(store, ["source:3"], "ferns") == ["the loaded manual says to water ferns weekly"]
        hits = await store.search(["source:3"], "ferns weekly", embed_text("unrelated", DIM), 3)
        assert [hit.owner for hit in hits] == ["source:3"]
    finally:
        await store.close()


def test_the_server_outlives_a_short_user_and_stops_when_unused(tmp_path: Path) -> None:
    data = tmp_path / "milvus.db"
    files = LiteFiles(data)
    serve = SharedLite.attach(data, idle_seconds=0.5)
    chat = SharedLite.attach(data, idle_seconds=0.5)
    assert chat.uri == serve.uri
    # The port is the server's alone: every socket listening on it is the recorded process's.
    record = files.read_record()
    assert record is not None
    pid = int(files.record.read_text().split('"pid": ')[1].split(",")[0])
    port = int(serve.uri.rsplit(":", 1)[1])
    assert _listeners(port) and _listeners(port) <= _own_sockets(pid)

    chat.release()  # a short `membot chat` ends
    time.sleep(1.5)
    assert server_alive(files) and files.read_record() == record
    serve.release()
    wait_until_gone(files)
    assert not server_alive(files) and not files.record.exists()


def test_a_stale_record_is_replaced(tmp_path: Path) -> None:
    data = tmp_path / "milvus.db"
    files = LiteFiles(data)
    files.write_record("killed-long-ago", port=9)  # a server that died without clearing its record
    shared = SharedLite.attach(data, idle_seconds=0.5)
    try:
        assert shared.uri != "http://127.0.0.1:9" and server_alive(files)
        from pymilvus import MilvusClient

        client = MilvusClient(shared.uri)
        assert client.list_collections() == []
        client.close()
    finally:
        shared.release()


async def test_an_unreachable_server_is_one_line_naming_it() -> None:
    store = PassageStore("http://127.0.0.1:9", DIM)
    with pytest.raises(PassageStoreError) as caught:
        await store.ready()
    message = str(caught.value)
    assert "http://127.0.0.1:9" in message and "\n" not in message and caught.value.__cause__ is None


async def test_a_server_that_died_is_started_again_on_next_use(tmp_path: Path) -> None:
    data = tmp_path / "milvus.db"
    store = PassageStore(str(data), DIM)
    try:
        await store.insert("agent:1", [row("the meeting moved to Tuesday")])
        await store.flush()
        pid = int(LiteFiles(data).record.read_text().split('"pid": ')[1].split(",")[0])
        os.kill(pid, 9)
        await asyncio.to_thread(wait_until_gone, LiteFiles(data))
        with pytest.raises(PassageStoreError):
            await store.search(["agent:1"], "meeting", embed_text("meeting", DIM), 3)
        # Milvus Lite replays its WAL: nothing written was lost.
        assert await texts(store, ["agent:1"], "meeting") == ["the meeting moved to Tuesday"]
    finally:
        await store.close()


def wait_until_gone(files: LiteFiles) -> None:
    deadline = time.monotonic() + 15
    while server_alive(files) and time.monotonic() < deadline:
        time.sleep(0.05)


# ----- deployments ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["lite", "server"])
def shared_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "milvus.db") if request.param == "lite" else request.getfixturevalue("milvus_server")


async def test_deployments_sharing_a_milvus_never_see_each_other(shared_uri: str) -> None:
    ns = os.urandom(4).hex()
    staging = PassageStore(shared_uri, DIM, namespace=f"s{ns}")
    production = PassageStore(shared_uri, DIM, namespace=f"p{ns}")
    try:
        await production.insert("agent:1", [row("the launch code is 0000")])
        await staging.insert("agent:1", [row("staging agent one likes tea")])
        await production.flush()
        await staging.flush()
        assert await texts(staging, ["agent:1"], "launch code") == ["staging agent one likes tea"]
        [hit] = await production.search(["agent:1"], "launch", embed_text("launch", DIM), 5)
        assert (hit.owner, hit.text) == ("agent:1", "the launch code is 0000")  # the callers' own names
        assert await staging.count(["agent:1"]) == 1
        await staging.delete("agent:1")
        assert await production.count(["agent:1"]) == 1
    finally:
        await staging.close()
        await production.close()


async def test_a_new_database_is_namespaced_and_an_old_one_keeps_its_names(tmp_path: Path) -> None:
    new = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    old_path = tmp_path / "old.db"
    old_path.write_bytes(OLD_DB.read_bytes())
    old = await Database.open(f"sqlite+aiosqlite:///{old_path}")
    try:
        [(new_id, new_legacy)] = await new.rows(select(DeploymentRow.id, DeploymentRow.legacy_owners))
        [(old_id, old_legacy)] = await old.rows(select(DeploymentRow.id, DeploymentRow.legacy_owners))
        assert not new_legacy and old_legacy and new_id != old_id and new_id[0].isalpha()
        # Opened again, the same id: it was made once.
        assert (await new.rows(text("SELECT count(*) FROM deployment")))[0][0] == 1
    finally:
        await new.close()
        await old.close()


# ----- read your own writes, and totals that agree with the page ------------------------------------------------


@pytest.fixture(params=["lite", "server"])
async def any_store_service(request, home, model):
    overrides = {}
    if request.param == "server":
        overrides["MEMBOT_MILVUS_URI"] = request.getfixturevalue("milvus_server")
    svc = await BotService.open(make_settings(home, model, **overrides))
    try:
        yield svc
    finally:
        await svc.close()


async def test_an_agent_finds_what_it_just_stored(any_store_service, model, user):
    alice = user("alice")
    model.script(
        tool_call("archival_memory_insert", {"content": "Alice's locker code is 4417", "request_heartbeat": True}),
        tool_call("archival_memory_search", {"query": "locker code", "request_heartbeat": True}),
        send("It's 4417."),
    )
    events = await collect(any_store_service.chat(alice, "remember my locker code 4417, then check it"))
    results = [e for e in events if isinstance(e, FunctionResult)]
    assert results[0].ok and results[1].ok
    assert results[1].result.startswith("Showing passages 1-1 of 1") and "4417" in results[1].result


def test_totals_never_disagree_with_the_page() -> None:
    assert _total(1, 0, 4, 5) == 4  # "Showing passages 1-4 of 1" was reported
    assert _total(9, 0, 5, 5) == 9 and _total(3, 0, 5, 5) == 5
    assert _total(7, 5, 2, 5) == 7 and _total(20, 5, 2, 5) == 7
    assert _total(3, 0, 0, 5) == 0 and _total(12, 10, 0, 5) == 10
