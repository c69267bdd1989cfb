"""The lexical (BM25) half of archival search for Milvus Lite: SQLite FTS5 over the passage texts.

Milvus Lite's own BM25 walks every row of the collection in Python for each query (~17 µs a row: ~1.7 s of
work at 100,000 rows, ~30 ms even when only one owner's partition is scored), so on Lite the texts are also
kept here, one FTS5 table per owner (as Milvus Lite keeps one partition per owner): a query reads only the
posting lists of the owners it names, however many other passages there are. A single table with the owner
as an indexed column measured 12 ms against 3.4 ms at 100,000 rows, since FTS5 walks a common term's whole
posting list before the owner narrows it.

It is a file of its own beside the Milvus Lite file, not a table in membot's SQL database: it is an index of
that Milvus file (it follows MEMBOT_MILVUS_URI, and is rebuilt from it when missing), it works when the SQL
database is PostgreSQL, and bulk loads do not queue behind the agents' step commits.

Rows are keyed by the Milvus id. Passages are written to Milvus first and deleted from here first, so every
row here has its Milvus row: lexical hits never show a passage that is gone. The methods block; the passage
store calls them on worker threads, and one lock serialises them on the one connection.

Every membot process over one Milvus Lite file opens this file too (they share Milvus Lite's server): WAL
lets readers go on beside one writer, writers begin IMMEDIATE and wait for each other (busy_timeout), and
which owner has which table is read from the file in the same transaction as the rows, never remembered, so
one process sees the tables another made or dropped.

Chinese, Japanese and Korean text has no spaces for FTS5 to cut at: each row also indexes, in its `cjk` column,
the characters and overlapping bigrams of its CJK runs (memory/cjk.py), which queries are cut into the same way.
A file of the format before that column is emptied when opened, and refilled from Milvus like a missing one.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from membot.agent.memory.cjk import index_tokens
from membot.agent.memory.query import query_terms

log = logging.getLogger(__name__)

TOKENIZER = "porter unicode61 remove_diacritics 2"
BUSY_MS = 30_000  # another process's write transaction is short; a bulk load commits per batch
# The tables' layout; a file of another format is emptied on open, to be refilled from Milvus (see open_lite).
FORMAT = "2"  # 2: the `cjk` column
_OWNER = re.compile(r"(?:[a-z][a-z0-9]*:)?[a-z]+:\d+")


def owner_key(owner: str) -> str:
    """A name for the owner's Milvus partition and FTS table: `agent:12` -> `agent_12`, and with a deployment's
    namespace `d1f2:agent:12` -> `d1f2_agent_12` (two `_`, where plain names have one). Other owner strings
    (none are made today) get a hex form; the forms cannot collide (hex has no `_`)."""
    if _OWNER.fullmatch(owner):
        return owner.replace(":", "_")
    return "x" + owner.encode().hex()[:200]


@dataclass(frozen=True)
class TextRow:
    id: int
    text: str
    filename: str
    page: int
    doc_hash: str
    created_at: float


@dataclass(frozen=True)
class TextHit:
    row: TextRow
    owner: str
    score: float  # FTS5 bm25(): lower is better


class PassageText:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> PassageText | None:
        """The index at `path`, or None when this SQLite has no FTS5 (archival search is then dense only).

        The index only mirrors the passages in Milvus. A file damaged past reading is set aside (renamed
        `.damaged-<time>`) and a new one is made, which the caller refills from Milvus (it is not complete)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls._open(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, unwritable: not a damaged file
                raise
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            log.warning("the archival text index %s is damaged (%s); set aside as %s and rebuilt", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                damaged = path.with_name(path.name + suffix)
                if damaged.exists():
                    damaged.rename(aside.with_name(aside.name + suffix))
            return cls._open(path)

    @classmethod
    def _open(cls, path: Path) -> PassageText | None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_MS}")  # first: the next statements may wait for a writer
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, tbl TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.probe USING fts5(x, tokenize='{TOKENIZER}')")
            db.execute("DROP TABLE temp.probe")
            text = cls(db)
            text._check_format()
            return text
        except sqlite3.OperationalError as exc:
            db.close()
            if "fts5" in str(exc).lower() or "no such module" in str(exc).lower():
                return None
            raise
        except sqlite3.DatabaseError:
            db.close()
            raise

    # ----- state --------------------------------------------------------------------------------------------

    def is_complete(self) -> bool:
        """Whether it holds every passage of the collection (False for a new or half-built file)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone()
        return row is not None

    def mark_complete(self) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('complete', '1')")

    def reset(self) -> None:
        """Forget everything (the collection it mirrors is being rebuilt)."""
        with self._lock, self._transaction():
            self._empty()

    def _check_format(self) -> None:
        """Empty a file of an earlier format (its tables lack a column) and record this one. One write
        transaction: of processes opening the file at once, one empties it and the others find it emptied."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None or row[0] != FORMAT:
                self._empty()
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format', ?)", (FORMAT,))

    # ----- writes -------------------------------------------------------------------------------------------

    def add(self, owner: str, rows: Sequence[TextRow]) -> None:
        if not rows:
            return
        with self._lock, self._transaction():
            table = self._table(owner, create=True)
            self._db.executemany(
                f'INSERT OR REPLACE INTO "{table}"(rowid, text, cjk, filename, page, doc_hash, created_at) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.text, index_tokens(r.text) or "", r.filename, r.page, r.doc_hash, r.created_at)
                 for r in rows],
            )

    def delete(self, owner: str, doc_hash: str | None = None, after: float | None = None) -> None:
        """The owner's rows, or those of one document, or those written after a moment."""
        with self._lock, self._transaction():
            table = self._table(owner, create=False)
            if table is None:
                return
            if doc_hash is None and after is None:  # the whole owner: a source being deleted
                self._db.execute(f'DROP TABLE "{table}"')
                self._db.execute("DELETE FROM owners WHERE owner = ?", (owner,))
                return
            where, params = "1", []
            if doc_hash is not None:
                where, params = "doc_hash = ?", [doc_hash]
            if after is not None:
                where, params = where + " AND created_at > ?", [*params, after]
            self._db.execute(f'DELETE FROM "{table}" WHERE {where}', params)

    # ----- reads --------------------------------------------------------------------------------------------

    def search(self, owners: Iterable[str], query: str, limit: int) -> list[TextHit]:
        """The best `limit` rows of these owners by BM25, best first."""
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        hits: list[TextHit] = []
        with self._lock, self._transaction(write=False):  # one snapshot: tables and rows agree
            for owner in dict.fromkeys(owners):
                table = self._table(owner, create=False)
                if table is None:
                    continue
                found = self._db.execute(
                    f'SELECT rowid, text, filename, page, doc_hash, created_at, bm25("{table}") AS score '
                    f'FROM "{table}" WHERE "{table}" MATCH ? ORDER BY score, rowid LIMIT ?',
                    (match, limit),
                )
                hits.extend(TextHit(TextRow(*row[:6]), owner, row[6]) for row in found)
        # Scores of different owners' tables use their own IDF; Milvus's BM25 mixed per-segment IDFs the same way.
        hits.sort(key=lambda hit: (hit.score, hit.row.id))
        return hits[:limit]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----- helpers (called with the lock held) ---------------------------------------------------------------

    def _table(self, owner: str, *, create: bool) -> str | None:
        """The owner's table (inside a transaction), made if `create`."""
        table = "text_" + owner_key(owner)
        if self._db.execute("SELECT 1 FROM owners WHERE owner = ?", (owner,)).fetchone() is not None:
            return table
        if not create:
            return None
        self._db.execute(
            f'CREATE VIRTUAL TABLE IF NOT EXISTS "{table}" USING fts5(text, cjk, filename UNINDEXED, page UNINDEXED, '
            f"doc_hash UNINDEXED, created_at UNINDEXED, tokenize='{TOKENIZER}')"
        )
        self._db.execute("INSERT OR REPLACE INTO owners(owner, tbl) VALUES (?, ?)", (owner, table))
        return table

    def _empty(self) -> None:
        """Every owner's table and the `complete` mark gone (inside a transaction); the format stays."""
        for (table,) in self._db.execute("SELECT tbl FROM owners").fetchall():
            self._db.execute(f'DROP TABLE IF EXISTS "{table}"')
        self._db.execute("DELETE FROM owners")
        self._db.execute("DELETE FROM meta WHERE key <> 'format'")

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[None]:
        """BEGIN ... COMMIT on the autocommit connection (IMMEDIATE for writes: the write lock is waited for
        first, not found taken half way); on an error, ROLLBACK."""
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            self._db.execute("COMMIT")  # inside: a failed commit must not leave the transaction open
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
