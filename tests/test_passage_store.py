"""The archival passage store on a real Milvus Lite file (through its shared server) and on a Milvus server
(`milvus-lite server` on loopback): what each search may see, deletes from both halves (vectors and texts),
reopening, and the move of a file made by the earlier one-collection layout."""

from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from membot.agent.store.lite_shared import SharedLite
from membot.agent.store.milvus_open import COLLECTION, index, schema
from membot.agent.store.passages import PassageRow, PassageStore
from tests.conftest import EMBEDDING_DIM
from tests.fakes.openai_server import embed_text

if TYPE_CHECKING:
    from pymilvus import MilvusClient

# The server's one collection is shared by every test of the session (test_sources' too): one size for all.
DIM = EMBEDDING_DIM


def row(text: str, doc_hash: str = "", filename: str = "") -> PassageRow:
    return PassageRow(text, embed_text(text, DIM), filename=filename, page=1 if filename else 0, doc_hash=doc_hash)


async def search(store: PassageStore, owners: list[str], query: str, limit: int = 10) -> list[str]:
    return [hit.text for hit in await store.search(owners, query, embed_text(query, DIM), limit)]


async def lexical(store: PassageStore, owners: list[str], query: str) -> list[str]:
    """Texts found with an embedding that points nowhere near them: only the BM25 half can find these."""
    hits = await store.search(owners, query, embed_text("unrelated filler vector", DIM), 3)
    return [hit.text for hit in hits]


def fresh_namespace() -> str:
    return "t" + secrets.token_hex(5)


def remove_text_index(folder: Path) -> None:
    for path in folder.glob("milvus.db.text.sqlite*"):
        path.unlink()


def damage_text_index(folder: Path) -> None:
    remove_text_index(folder)
    (folder / "milvus.db.text.sqlite").write_bytes(b"not a database at all, a disk gone bad " * 200)


def set_aside(folder: Path) -> list[Path]:
    return list(folder.glob("milvus.db.text.sqlite.damaged-*"))


@pytest.fixture(params=["lite", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "lite":
        passages = PassageStore(str(tmp_path / "milvus.db"), DIM)
    else:  # a namespace of its own on the session's server: every test starts from nothing
        passages = PassageStore(request.getfixturevalue("milvus_server"), DIM, namespace=fresh_namespace())
    try:
        yield passages
    finally:
        await passages.close()


async def test_search_sees_only_the_owners_it_names(store: PassageStore) -> None:
    await store.insert("agent:1", [row("alice keeps bees in the garden"), row("alice likes green tea")])
    await store.insert("agent:2", [row("bob keeps bees too, and a zebra")])
    await store.insert("source:1", [row("the zebra manual, chapter one", "h1", "manual.pdf")])
    await store.flush()

    assert set(await search(store, ["agent:1"], "bees zebra")) == {
        "alice keeps bees in the garden", "alice likes green tea"
    }
    mine = await search(store, ["agent:1", "source:1"], "zebra")
    assert mine[0] == "the zebra manual, chapter one" and len(mine) == 3
    assert not any("bob" in text for text in mine)
    # Owners with no passages (or never seen) have nothing, and never widen a search.
    assert await search(store, ["agent:3"], "bees") == []
    assert await store.count(["agent:3", "agent:99"]) == 0
    assert await store.count(["agent:1"]) == 2 and await store.count(["agent:1", "agent:2", "source:1"]) == 4
    hit = (await store.search(["source:1"], "manual", embed_text("manual", DIM), 1))[0]
    assert (hit.owner, hit.filename, hit.page) == ("source:1", "manual.pdf", 1)


async def test_words_find_passages_the_embedding_misses(store: PassageStore) -> None:
    # Vectors of their own (the hashed test embedding gives many of these notes the same one: a tie that no
    # page boundary can split the same way twice).
    rng = random.Random(5)
    notes = [PassageRow(f"note number {i} about nothing much", [rng.uniform(-1, 1) for _ in range(DIM)])
             for i in range(30)]
    await store.insert("agent:1", notes)
    await store.insert("agent:1", [row("the wifi password is hunter2")])
    await store.flush()
    assert "the wifi password is hunter2" in await lexical(store, ["agent:1"], "Hunter2 password?")
    # An empty query is the dense half alone; paging goes on past the first page, in the same order.
    probe = [rng.uniform(-1, 1) for _ in range(DIM)]
    first = await store.search(["agent:1"], "", probe, 5)
    second = await store.search(["agent:1"], "", probe, 5, offset=5)
    both = await store.search(["agent:1"], "", probe, 10)
    assert [h.id for h in first + second] == [h.id for h in both] and len(set(h.id for h in both)) == 10


async def test_deletes_remove_vectors_and_texts(store: PassageStore) -> None:
    await store.insert("source:1", [row("penguin facts, part one", "doc-a"), row("penguin facts, part two", "doc-a")])
    await store.insert("source:1", [row("walrus facts", "doc-b")])
    await store.insert("agent:1", [row("penguin diary entry")])
    await store.flush()
    cutoff = (await store.search(["agent:1"], "penguin", embed_text("penguin", DIM), 1))[0].created_at
    await store.insert("agent:1", [row("penguin note never committed")])
    await store.flush()

    await store.delete("source:1", "doc-a")
    assert not any("penguin" in text for text in await lexical(store, ["source:1"], "penguin"))
    assert await search(store, ["source:1"], "penguin walrus") == ["walrus facts"]
    await store.delete_newer("agent:1", cutoff)
    assert await search(store, ["agent:1"], "penguin") == ["penguin diary entry"]
    await store.delete("source:1")
    assert await search(store, ["source:1"], "walrus") == [] and await store.count(["source:1"]) == 0
    # A source loaded again after its delete is searchable again.
    await store.insert("source:1", [row("walrus facts, second edition", "doc-c")])
    await store.flush()
    assert await lexical(store, ["source:1"], "walrus") == ["walrus facts, second edition"]


@pytest.mark.parametrize("harm", ["lost", "damaged"])
async def test_passages_survive_reopening_and_a_lost_or_damaged_text_index(tmp_path: Path, harm: str) -> None:
    uri = tmp_path / "milvus.db"
    store = PassageStore(str(uri), DIM)
    await store.insert("agent:1", [row("the spare key is under the blue flowerpot")])
    await store.flush()
    await store.close()
    # Either way it is rebuilt from Milvus; a damaged file is set aside first (kept, for whoever wants to look).
    remove_text_index(tmp_path) if harm == "lost" else damage_text_index(tmp_path)

    store = PassageStore(str(uri), DIM)
    try:
        assert await lexical(store, ["agent:1"], "flowerpot") == ["the spare key is under the blue flowerpot"]
        await store.insert("agent:1", [row("and the car key is in the drawer")])
        await store.flush()
        assert await store.count(["agent:1"]) == 2
    finally:
        await store.close()
    assert len(set_aside(tmp_path)) == (1 if harm == "damaged" else 0)


def old_layout(uri: str) -> MilvusClient:
    """A client on `uri` (through its shared server, as the store reaches it) holding the earlier layout's
    collection, as the store made it: one collection, a partition key on owner, Milvus's BM25."""
    from pymilvus import MilvusClient

    shared = SharedLite.attach(Path(uri))
    client = MilvusClient(shared.uri)
    client.create_collection(
        COLLECTION, schema=schema(DIM, True), index_params=index(client, True)
    )
    # The server stays up while the test goes on (it stops once unused), so the use can end here.
    shared.release()
    return client


def milvus_row(owner: str, text: str, at: float) -> dict[str, Any]:
    return {"owner": owner, "text": text, "dense": embed_text(text, DIM), "filename": "", "page": 0,
            "doc_hash": "", "created_at": at}


async def test_a_file_of_the_earlier_layout_is_moved_on_open(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    client = old_layout(uri)
    old = [("agent:1", f"alice fact {i}", 1000.0 + i) for i in range(1_200)]
    old += [("agent:2", "bob owns a tortoise", 5000.0), ("source:7", "tortoise care guide", 6000.0)]
    client.insert(COLLECTION, [milvus_row(*item) for item in old])
    client.flush(COLLECTION)
    client.close()

    store = PassageStore(uri, DIM)
    try:
        assert await store.count(["agent:1"]) == 1_200
        assert await store.count(["agent:2", "source:7"]) == 2
        assert set(await lexical(store, ["agent:2", "source:7"], "tortoise")) == {
            "bob owns a tortoise", "tortoise care guide"
        }
        theirs = await search(store, ["agent:1"], "tortoise")
        assert len(theirs) == 10 and not any("tortoise" in text for text in theirs)
        # Times were kept: what was written after a moment can still be told apart.
        await store.delete_newer("agent:1", 1000.0 + 1_099)
        assert await store.count(["agent:1"]) == 1_100
        opened = await store.ready()
        assert not opened.client.has_collection(COLLECTION)
    finally:
        await store.close()


async def test_a_move_that_died_half_way_starts_again(tmp_path: Path) -> None:
    from membot.agent.store import milvus_layout

    uri = str(tmp_path / "milvus.db")
    client = old_layout(uri)
    client.insert(COLLECTION, [milvus_row("agent:1", f"kept fact {i}", 1.0) for i in range(5)])
    # As if an earlier open had created the new collection and copied part of the rows, then died.
    client.create_collection(milvus_layout.COLLECTION, schema=milvus_layout.schema(DIM))
    client.create_partition(milvus_layout.COLLECTION, "agent_1")
    client.insert(milvus_layout.COLLECTION, [milvus_row("agent:1", "kept fact 0", 1.0)], partition_name="agent_1")
    client.flush(COLLECTION)
    client.flush(milvus_layout.COLLECTION)
    client.close()

    store = PassageStore(uri, DIM)
    try:
        assert await store.count(["agent:1"]) == 5  # every row once: none lost, none doubled
        assert sorted(await search(store, ["agent:1"], "kept fact")) == [f"kept fact {i}" for i in range(5)]
    finally:
        await store.close()


async def test_an_empty_old_collection_made_later_does_not_cost_the_moved_passages(tmp_path: Path) -> None:
    """An earlier membot opened the file after the move and made its own, empty collection again."""
    uri = str(tmp_path / "milvus.db")
    store = PassageStore(uri, DIM)
    await store.insert("agent:1", [row("the boat is called Marigold")])
    await store.flush()
    await store.close()
    old_layout(uri).close()

    store = PassageStore(uri, DIM)
    try:
        assert await search(store, ["agent:1"], "boat") == ["the boat is called Marigold"]
        assert not (await store.ready()).client.has_collection(COLLECTION)
    finally:
        await store.close()


async def test_small_partitions_flush_without_faiss_warnings_in_the_terminal(
    store: PassageStore, capfd: pytest.CaptureFixture[str]
) -> None:
    # faiss writes its training warnings from C++ straight to file descriptor 2: `membot chat` showed them.
    await store.insert("agent:1", [row("a single note")])
    await store.flush()
    await store.insert("agent:1", [row("and a second one")])
    await store.flush()
    assert set(await search(store, ["agent:1"], "single note")) == {"a single note", "and a second one"}
    assert "clustering" not in capfd.readouterr().err
