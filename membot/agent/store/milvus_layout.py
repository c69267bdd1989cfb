"""How archival passages are laid out in Milvus Lite, and the move of a file made by the earlier layout.

Milvus Lite treats a partition key as 16 hash buckets and never prunes by it: every filtered search read all
rows (and built a mask over them in Python), ~60 ms for dense search at 50,000 rows. Here each owner has a
partition of its own, and a search names only the partitions of the owners it may see; the owner filter stays
as a second guard. Per-owner partitions are for Lite only: a Milvus server prunes a partition key itself and
caps partitions (~1,024), so the server keeps the earlier layout (see PassageStore). The cost on Lite: its
flush and background maintenance walk every partition, so a one-passage insert and flush took ~15 ms with 20
owners, ~50 ms with 1,000 and ~100-200 ms with 3,000 (searches stayed at ~5 ms). Deployments with thousands of
agents that use archival memory belong on a Milvus server.

The dense index is IVF_FLAT with one list: an exact scan of the partition (faiss, ~1 ms per 5,000 rows of
1,536-d), where HNSW behind an owner mask found 76-80% of the true top 10. Milvus Lite reads build params only
in the nested form `params={"params": {...}}`; flat ones are silently dropped (nlist fell back to 128).

BM25 is not Milvus's here: Milvus Lite scores it in Python over every row of the collection. The texts live
in PassageText (SQLite FTS5) instead, keyed by the Milvus id.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from membot.agent.store.passage_text import PassageText, TextRow, owner_key

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

COLLECTION = "membot_passages_by_owner"
#: The collection of the earlier layout (partition key on `owner`, Milvus's BM25 function); the server's.
OLD_COLLECTION = "membot_passages"
FIELDS = ["owner", "text", "filename", "page", "doc_hash", "created_at"]
COPY_BATCH = 1_000
DENSE_INDEX: dict[str, Any] = {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"params": {"nlist": 1}}}
DENSE_SEARCH: dict[str, Any] = {"metric_type": "COSINE", "params": {"nprobe": 1}}


@dataclass
class LiteLayout:
    client: MilvusClient
    text: PassageText | None
    partitions: set[str]
    _creating: threading.Lock = field(default_factory=threading.Lock)

    def partition_names(self, owners: Iterable[str]) -> list[str]:
        """Blocking: the partitions of these owners that exist; an owner without one has no passages.

        Other processes share the server and make partitions too (a load beside `serve`): a name not known
        here is looked up again in Milvus before it counts as missing."""
        names = list(dict.fromkeys(map(owner_key, owners)))
        if any(name not in self.partitions for name in names):
            self.partitions.update(self.client.list_partitions(COLLECTION))
        return [name for name in names if name in self.partitions]

    def insert(self, owner: str, data: list[dict[str, Any]]) -> list[int]:
        """Blocking: write the rows to the owner's partition (made on first use), then their texts."""
        name = owner_key(owner)
        if name not in self.partitions:
            with self._creating:
                if name not in self.partitions:
                    if not self.client.has_partition(COLLECTION, name):
                        try:
                            self.client.create_partition(COLLECTION, name)
                        except Exception:
                            if not self.client.has_partition(COLLECTION, name):  # else another process made it
                                raise
                    self.partitions.add(name)
        ids = list(self.client.insert(COLLECTION, data, partition_name=name)["ids"])
        if self.text is not None:
            try:
                self.text.add(owner, [_text_row(pk, row) for pk, row in zip(ids, data, strict=True)])
            except BaseException:
                # The caller hears the insert failed: it must not stay half done (found by meaning, and stored
                # twice if the agent tries again).
                self.client.delete(COLLECTION, ids=ids, partition_name=name)
                raise
        return ids

    def close(self) -> None:
        if self.text is not None:
            self.text.close()


def _text_row(pk: int, row: dict[str, Any]) -> TextRow:
    return TextRow(int(pk), row["text"], row["filename"], int(row["page"]), row["doc_hash"], float(row["created_at"]))


def schema(dim: int) -> Any:
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("owner", DataType.VARCHAR, max_length=64)
    s.add_field("text", DataType.VARCHAR, max_length=65_535)
    s.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("filename", DataType.VARCHAR, max_length=512)
    s.add_field("page", DataType.INT64)
    s.add_field("doc_hash", DataType.VARCHAR, max_length=64)
    s.add_field("created_at", DataType.DOUBLE)
    return s


def quiet_index_training() -> None:
    """Stop faiss's "WARNING clustering N points to 1 centroids" on stderr at each flush of a small partition.

    Milvus Lite trains its IVF indexes with faiss's default of 39 vectors per list; below that, faiss prints the
    warning from C++, past Python's logging, straight into the terminal of `membot chat`. DENSE_INDEX has one
    list (an exact scan), which any number of vectors trains, so Lite's IVF indexes are built asking for one.
    Lite builds them through its module's `faiss` name; that name is wrapped, nothing else of faiss changes."""
    try:
        from milvus_lite.index import faiss_ivf_flat
    except ImportError:  # another Milvus Lite layout: its messages stay as they are
        return
    real = getattr(faiss_ivf_flat, "faiss", None)
    if real is not None and not isinstance(real, _OneVectorPerList):
        faiss_ivf_flat.faiss = _OneVectorPerList(real)  # type: ignore[assignment]


class _OneVectorPerList:
    """The faiss module, but IndexIVFFlat asks for one training vector per list, not 39."""

    def __init__(self, faiss: Any) -> None:
        self._faiss = faiss

    def __getattr__(self, name: str) -> Any:
        return getattr(self._faiss, name)

    def IndexIVFFlat(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (faiss's own name)
        index = self._faiss.IndexIVFFlat(*args, **kwargs)
        index.cp.min_points_per_centroid = 1
        return index


def open_lite(
    client: MilvusClient, dim: int, text: PassageText | None, check: Callable[[str], object]
) -> LiteLayout:
    """Blocking: the Lite layout, created (and filled from an earlier layout's collection) if need be.
    `check(collection)` raises if a stored collection does not fit (another embedding size)."""
    if client.has_collection(COLLECTION) and not client.has_collection(OLD_COLLECTION):
        check(COLLECTION)
        client.load_collection(COLLECTION)
        layout = LiteLayout(client, text, set(client.list_partitions(COLLECTION)))
        if text is not None and not text.is_complete():
            _rebuild_text(layout)
        return layout
    if client.has_collection(OLD_COLLECTION):
        check(OLD_COLLECTION)  # before anything changes
    if client.has_collection(COLLECTION):
        if _is_empty(client, OLD_COLLECTION):
            # Not a move cut short (the old collection is dropped only once copied, and copying starts from a
            # full one) but an empty one made since, by an earlier membot opening this file: the new layout
            # holds everything.
            client.drop_collection(OLD_COLLECTION)
            return open_lite(client, dim, text, check)
        client.drop_collection(COLLECTION)  # a move that died half way: start it again
    index = client.prepare_index_params()
    index.add_index("dense", **DENSE_INDEX)
    client.create_collection(COLLECTION, schema=schema(dim), index_params=index)
    if text is not None:
        text.reset()
    layout = LiteLayout(client, text, set(client.list_partitions(COLLECTION)))
    if client.has_collection(OLD_COLLECTION):
        _move_old(layout)
    if text is not None:
        text.mark_complete()
    return layout


def _is_empty(client: MilvusClient, collection: str) -> bool:
    client.load_collection(collection)
    result = client.query(collection, filter="", output_fields=["count(*)"])
    return not result or int(result[0]["count(*)"]) == 0


class _QuietIterator(logging.Filter):
    """Milvus Lite gives a query iterator no session time, and pymilvus warns at each one it starts that it uses
    the client's clock instead: harmless for a copy or an export, so not worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_QuietIterator())


def batches(client: MilvusClient, collection: str, fields: list[str], filter: str = "",
            **options: Any) -> Iterable[list[dict[str, Any]]]:
    """Every row `filter` selects, a batch at a time, through Milvus's query iterator (blocking: for a worker
    thread)."""
    iterator = client.query_iterator(collection, batch_size=COPY_BATCH, filter=filter, output_fields=fields,
                                     **options)
    try:
        while batch := iterator.next():
            yield batch
    finally:
        iterator.close()


def _move_old(layout: LiteLayout) -> None:
    """Copy every row of the earlier layout's collection into per-owner partitions (new ids, same data and
    times, so `delete_newer` still works), then drop it. Until the drop, a crash leaves the old collection
    whole, and the next open starts the copy again."""
    client = layout.client
    client.load_collection(OLD_COLLECTION)
    log.info("archival store: moving passages to one partition per owner (once)")
    moved = 0
    for batch in batches(client, OLD_COLLECTION, [*FIELDS, "dense"]):
        by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in batch:
            by_owner[row["owner"]].append({name: row[name] for name in [*FIELDS, "dense"]})
        for owner, rows in by_owner.items():
            layout.insert(owner, rows)
        moved += len(batch)
    client.flush(COLLECTION)  # sealed before the old copy goes
    client.drop_collection(OLD_COLLECTION)
    log.info("archival store: moved %d passages", moved)


def _rebuild_text(layout: LiteLayout) -> None:
    """Fill a missing or half-built text index from the collection."""
    assert layout.text is not None
    layout.text.reset()
    for batch in batches(layout.client, COLLECTION, ["id", *FIELDS]):
        by_owner: dict[str, list[TextRow]] = defaultdict(list)
        for row in batch:
            by_owner[row["owner"]].append(_text_row(row["id"], row))
        for owner, rows in by_owner.items():
            layout.text.add(owner, rows)
    layout.text.mark_complete()
