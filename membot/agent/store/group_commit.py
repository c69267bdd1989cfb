"""The SQLite writer thread, with group commit: units of work that queued while a transaction ran commit
together in the next one (see GroupCommit)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
Work = Callable[[Session], T]

# Units of work committed together at most, when that many have queued behind a transaction.
MAX_GROUP_COMMIT = 64
# How long a unit of work begun without waiting (`start`) waits for others to join its group, unless someone
# waits for it (see GroupCommit.hurry). In a burst, 200 users' commits otherwise came one or two at a time, and
# each group's statements took the GIL from the event loop again.
GROUP_WINDOW = 0.002


class EarlierWriteFailed(RuntimeError):
    """Not run: a unit of work begun before it on the same WriteChain failed."""


class TransactionLost(RuntimeError):
    """The database rolled a group's whole transaction back: every unit of work in it failed."""


class Batchable(Protocol):
    """A unit of work that is also data: units of one such type that queued together run as one set of
    statements (`run_together`) in one savepoint, instead of one after another in a savepoint each."""

    def __call__(self, session: Session) -> None: ...

    @classmethod
    def run_together(cls, session: Session, works: Sequence[Any]) -> None: ...


class WriteChain:
    """Units of work one caller begins one after another without waiting (an agent's commits). Once one of them
    fails, those begun after it fail too, unrun: a later commit must not land over the gap an earlier one left.
    A new chain starts clean (an agent loaded afresh from what was committed gets a new one)."""

    __slots__ = ("broken", "_turn")

    def __init__(self) -> None:
        #: Set by the writer (its thread, or the async driver's task) when a unit of work on it fails or is
        #: cancelled before it ran.
        self.broken = False
        self._turn: asyncio.Lock | None = None

    def turn(self) -> asyncio.Lock:
        """Held by the unit of work running (the async driver's; the writer thread needs none). asyncio locks
        are fair: units begun in order take it in order, and one cancelled while it waits keeps nobody's place."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        return self._turn


@dataclass
class _Job:
    work: Work[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    chain: WriteChain | None
    core: bool  # runs Core statements only (see GroupCommit.start)


class GroupCommit:
    """The writer thread. Units of work queue here and run in order; those that queued while a transaction
    ran are run together in the next one, each in a savepoint of its own, and committed at once (group
    commit). Under load a commit, a session and a wake-up of the event loop are paid per batch, not per
    unit of work; alone, a unit of work runs as before, in a transaction of its own. Units of work begun without
    waiting (`start`) wait up to GROUP_WINDOW for company, and those that are `Batchable` run together.

    A unit of work that raises rolls back its savepoint only; the others in its batch still commit, but for
    those begun after it on the same WriteChain, which fail unrun. If the commit itself fails, every unit of
    work in the batch gets the error: none of them was written."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._hurry = threading.Event()  # someone waits for a unit of work in the queue: no lingering
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="membot-sql-write", daemon=True)
        self._thread.start()

    def start(self, work: Work[T], chain: WriteChain | None = None, core: bool = False) -> asyncio.Future[T]:
        """Queue `work`; the future settles once it is committed (or has failed).

        `core`: the work runs Core statements only, no ORM objects. In a group it then runs in a plain
        SAVEPOINT of the driver's, not the Session's nested transaction, which cost more than the work itself
        (the messages of one step: 320 µs a unit with it, 175 without). A unit of work that leaves ORM objects
        in the session anyway fails, and nothing of it lands."""
        if self._closed:  # nobody would ever answer
            raise RuntimeError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(work, future, loop, chain, core))
        return future

    def hurry(self) -> None:
        """Someone waits for a unit of work begun with `start`: commit what is queued without waiting for more."""
        self._hurry.set()

    async def submit(self, work: Work[T]) -> T:
        future = self.start(work)
        self.hurry()
        return await future

    async def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self.hurry()
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._jobs.qsize() < MAX_GROUP_COMMIT - 1:
                self._hurry.wait(GROUP_WINDOW)
            # Cleared once the wait is over: a hurry for a unit of work queued by now is served by this group,
            # unless the group is full; then the units of work left in the queue are hurried along too.
            hurried = self._hurry.is_set()
            self._hurry.clear()
            batch = [job]
            while len(batch) < MAX_GROUP_COMMIT:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(job)
            if hurried and len(batch) == MAX_GROUP_COMMIT:
                self._hurry.set()
            try:
                done = self._commit(batch)
            except BaseException as exc:  # SystemExit in a unit of work: its callers hear of it, the thread lives
                error = RuntimeError(f"a unit of work raised {type(exc).__name__}: {exc}")
                done = [(job, False, error) for job in batch]
            for job, ok, _ in done:
                if not ok and job.chain is not None:  # its work failed, or the commit it was part of
                    job.chain.broken = True
            self._deliver(done)

    def _commit(self, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        if not batch:
            return []
        done: list[tuple[_Job, bool, Any]] = []
        try:
            with self._sessions.begin() as session:
                index = 0
                while index < len(batch):
                    run = _together(batch, index)
                    if len(run) > 1:
                        index += len(run)
                        if not _run_together(session, run, done):
                            for job in run:  # one by one, so that only the failing one fails
                                if _ready(job, done):
                                    _run_alone(session, job, done)
                        continue
                    job = batch[index]
                    index += 1
                    if not _ready(job, done):
                        continue
                    if len(batch) == 1:  # a transaction of its own: no savepoint needed
                        done.append((job, True, _run(job, session)))
                    else:
                        _run_alone(session, job, done)
        except Exception as exc:
            return [(job, False, exc) for job in batch]
        return done

    @staticmethod
    def _deliver(done: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for item in done:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)  # one wake-up of the loop per batch
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _together(batch: list[_Job], index: int) -> list[_Job]:
    """The jobs from `index` on that can run together: Batchable, of one type, Core only, and each still to
    run (the run stops before one cancelled or on a broken chain, which is dealt with at its own turn, after
    the ones before it have run)."""
    kind = type(batch[index].work)
    if not hasattr(kind, "run_together"):
        return []
    end = index
    while end < len(batch) and batch[end].core and type(batch[end].work) is kind and _still_to_run(batch[end]):
        end += 1
    return batch[index:end]


def _still_to_run(job: _Job) -> bool:
    return not job.future.cancelled() and not (job.chain is not None and job.chain.broken)


def _ready(job: _Job, done: list[tuple[_Job, bool, Any]]) -> bool:
    """Whether the job is to run; if not, what it came to is noted (or nothing, for one cancelled)."""
    if job.future.cancelled():
        # Cancelled before it ran: not run, which leaves a gap in its chain.
        if job.chain is not None:
            job.chain.broken = True
        return False
    if job.chain is not None and job.chain.broken:
        done.append((job, False, EarlierWriteFailed("an earlier write of its caller failed")))
        return False
    return True


def _run_together(session: Session, jobs: list[_Job], done: list[tuple[_Job, bool, Any]]) -> bool:
    """Run Batchable jobs of one type as one set of statements, in a savepoint; whether that succeeded. If it
    did not, nothing of it is left and the caller runs them one by one, so that only the failing one fails."""
    try:
        with _plain_savepoint(session):
            type(jobs[0].work).run_together(session, [job.work for job in jobs])
            if session.new or session.dirty or session.deleted:
                raise RuntimeError("a unit of work begun for Core statements only changed ORM objects")
    except TransactionLost:
        raise
    except Exception as exc:
        if not _driver(session).in_transaction:
            raise TransactionLost(f"the group's transaction was rolled back: {exc}") from exc
        session.expunge_all()
        return False
    done.extend((job, True, None) for job in jobs)
    return True


def _run_alone(session: Session, job: _Job, done: list[tuple[_Job, bool, Any]]) -> None:
    """Run one job of a group in a savepoint of its own: if it fails, it alone is undone."""
    try:
        # The Session's savepoint flushes what the unit of work added when it is released: only then has the
        # unit of work succeeded.
        with _plain_savepoint(session) if job.core else session.begin_nested():
            value = _run(job, session)
        done.append((job, True, value))
    except TransactionLost:
        raise
    except Exception as exc:
        if not _driver(session).in_transaction:
            # SQLite rolled the whole transaction back (disk full, a trigger's RAISE(ROLLBACK)): what ran
            # before is gone, and what runs after would commit statement by statement.
            raise TransactionLost(f"the group's transaction was rolled back: {exc}") from exc
        done.append((job, False, exc))
        if job.chain is not None:  # the ones after it in this batch are not run
            job.chain.broken = True
    # What one unit of work loaded is not shared with the next, as with sessions of their own.
    session.expunge_all()


def _run(job: _Job, session: Session) -> Any:
    value = job.work(session)
    if job.core and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a unit of work begun for Core statements only changed ORM objects")
    return value


@contextmanager
def _plain_savepoint(session: Session) -> Iterator[None]:
    """A savepoint the Session knows nothing of, for Core statements: what they did is in the database when
    they return, so there is nothing to flush, and a failed statement leaves the Session's transaction as it
    was."""
    driver = _driver(session)
    driver.execute("SAVEPOINT unit_of_work")
    try:
        yield
    except BaseException:
        if driver.in_transaction:  # else SQLite rolled everything back, savepoint and all (see _commit)
            try:
                driver.execute("ROLLBACK TO unit_of_work")
                driver.execute("RELEASE unit_of_work")
            except Exception as exc:  # what the unit did can no longer be told apart from the rest
                raise TransactionLost(f"a failed unit of work could not be undone: {exc}") from exc
        raise
    try:
        driver.execute("RELEASE unit_of_work")
    except Exception as exc:  # else what it did would commit with the group while it is reported failed
        raise TransactionLost(f"a unit of work's savepoint could not be released: {exc}") from exc


def _driver(session: Session) -> Any:
    """The pysqlite connection under the session's (SQLAlchemy's own way to reach it)."""
    return session.connection().connection.driver_connection


def _settle(items: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in items:
        if job.future.done():  # cancelled while it ran: what it did stands all the same (or failed)
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
