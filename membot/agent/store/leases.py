"""Leases: which process runs an agent's steps, so that steps of one agent never interleave across processes.

A lease is a row (`agent_leases`: agent, holder, expiry), the same on SQLite and PostgreSQL. A process takes
it before a step and gives it back after; while it holds it, it renews it, and every commit of the step checks
it is still the holder in the same transaction (`check`), so a process that lost its lease (it stalled past
the expiry and another took over) commits nothing. A holder that died is known by its expiry.

No database connection is held between these short transactions: a step's seconds of model calls pin nothing
of the pool, so a process can run as many steps at once as it has users talking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, false, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow, LeaseRow, utcnow

log = logging.getLogger(__name__)

# Long enough that a busy event loop never lets a live holder's lease lapse; short enough that a crashed
# process's agents come back soon.
LEASE_SECONDS = 30.0
# How long a step waits for another process's step of the same agent before giving up.
WAIT_SECONDS = 300.0


_LEASES, _AGENTS = LeaseRow.__table__, AgentRow.__table__
# Built once: every commit of a step runs it.
_RENEW = (
    update(_LEASES)
    .where(_LEASES.c.agent_id == bindparam("agent"), _LEASES.c.holder == bindparam("lease_holder"))
    .returning(_LEASES.c.cancel_requested)
)


def _claim_statement() -> Select[Any]:
    """PostgreSQL: take a lease nobody holds and read the agent's version, in one statement (one round trip,
    without BEGIN and COMMIT). No row: the lease is held (or the agent is gone), and the full take decides.
    The version is read under a row lock, which in READ COMMITTED returns the row's newest committed version,
    not the statement's snapshot: a step another process committed just before it gave the lease back is seen."""
    taken = (
        pg_insert(_LEASES)
        .from_select(["agent_id", "holder", "expires_at", "cancel_requested"],
                     select(_AGENTS.c.id, bindparam("holder", type_=_LEASES.c.holder.type),
                            bindparam("expires", type_=_LEASES.c.expires_at.type), false())
                     .where(_AGENTS.c.id == bindparam("agent")))
        .on_conflict_do_nothing()
        .returning(_LEASES.c.agent_id)
        .cte("taken")
    )
    return (select(_AGENTS.c.version)
            .where(_AGENTS.c.id == bindparam("agent"), exists(select(literal(1)).select_from(taken)))
            .with_for_update(read=True, key_share=True))


_CLAIM = _claim_statement()
_RELEASE = delete(_LEASES).where(_LEASES.c.agent_id == bindparam("agent"), _LEASES.c.holder == bindparam("holder"))


class LeaseLost(RuntimeError):
    """Another process took over the agent: this one's lease had expired. Nothing of the step commits."""


class AgentBusy(RuntimeError):
    """Another process kept the agent longer than a step may wait."""


class NoSuchAgent(LookupError):
    pass


def new_holder() -> str:
    """A name for this process's leases, unique across machines and restarts, readable in the table."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def check(session: Session, agent_id: int, holder: str, seconds: float = LEASE_SECONDS) -> bool:
    """Inside a write: the lease is still `holder`'s (renewed by the same statement), else LeaseLost; returns
    whether the step was asked to stop (/cancel). On PostgreSQL the statement locks the lease row until the
    commit, so no other process can take the lease between this check and the commit."""
    row = session.connection().execute(
        _RENEW, {"agent": agent_id, "lease_holder": holder, "expires_at": utcnow() + timedelta(seconds=seconds)}
    ).first()
    if row is None:
        raise LeaseLost(f"agent {agent_id} was taken over by another process")
    return bool(row[0])


def give_back(session: Session, agent_id: int, holder: str) -> None:
    """Inside a write: give the lease back with it (a step's last commit), as `Leases.release` would after it.
    The caller tells its Leases (`given_back`), whose `hold` then has nothing left to release."""
    session.connection().execute(_RELEASE, {"agent": agent_id, "holder": holder})


def _died_here(holder: str) -> bool:
    """Whether `holder` was a process of this machine that is gone: a `membot chat` killed and started again
    need not wait for the expiry of its own lease."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:60] or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


class Leases:
    def __init__(self, db: Database, holder: str | None = None, seconds: float = LEASE_SECONDS,
                 wait: float = WAIT_SECONDS) -> None:
        self.db = db
        self.holder = holder or new_holder()
        self.seconds = seconds
        self.wait = wait
        #: Agents whose lease a step's last commit gave back (see `give_back`), while `hold` still runs.
        self._given_back: set[int] = set()

    @asynccontextmanager
    async def hold(self, agent_id: int) -> AsyncIterator[int]:
        """Hold the agent's lease for the block, renewed while it runs; yields the agent's version as the
        lease was taken (a process that cached the agent at another version loads it again)."""
        version = await self.acquire(agent_id)
        self._given_back.discard(agent_id)
        renewing = asyncio.ensure_future(self._renew(agent_id))
        try:
            yield version
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
            if agent_id in self._given_back:
                self._given_back.discard(agent_id)
            else:
                await asyncio.shield(self.release(agent_id))

    def given_back(self, agent_id: int) -> None:
        """A write of the block `hold` runs gave the agent's lease back (`give_back`): not renewed or released
        any more."""
        self._given_back.add(agent_id)

    async def acquire(self, agent_id: int) -> int:
        """Take the lease, waiting (polling, backing off) while another process holds it."""
        deadline = time.monotonic() + self.wait
        pause = 0.02
        while True:
            version = None
            if not self.db.is_sqlite:  # mostly nobody holds it (leases are given back after each step)
                version = await self.db.write_one(partial(self._claim, agent_id))
            if version is None:
                version = await self.db.write(partial(self._take, agent_id))
            if version is not None:
                return version
            if time.monotonic() >= deadline:
                raise AgentBusy(f"agent {agent_id} is busy in another process; try again later")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def request_cancel(self, agent_id: int) -> bool:
        """Ask the step running for the agent, in whichever process, to stop at its next commit; False when no
        step holds the agent."""
        result = await self.db.write(
            lambda session: session.execute(
                update(LeaseRow).where(LeaseRow.agent_id == agent_id).values(cancel_requested=True)
            )
        )
        return bool(result.rowcount)

    async def release(self, agent_id: int) -> None:
        await self.db.write_one(
            lambda session: session.execute(_RELEASE, {"agent": agent_id, "holder": self.holder})
        )

    def _claim(self, agent_id: int, session: Session) -> int | None:
        expires = utcnow() + timedelta(seconds=self.seconds)
        return session.scalar(_CLAIM, {"agent": agent_id, "holder": self.holder, "expires": expires})

    def _take(self, agent_id: int, session: Session) -> int | None:
        version = session.scalar(select(AgentRow.version).where(AgentRow.id == agent_id))
        if version is None:
            raise NoSuchAgent(f"no agent {agent_id}")
        now = utcnow()
        expires = now + timedelta(seconds=self.seconds)
        # Mostly nobody holds it (leases are given back after each step): one statement takes it.
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        added = session.execute(
            insert(LeaseRow).values(agent_id=agent_id, holder=self.holder, expires_at=expires).on_conflict_do_nothing()
        )
        if added.rowcount == 1:
            return self._version_now(session, agent_id, version)
        held = session.execute(
            select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.agent_id == agent_id)
        ).first()
        if held is None:  # given back since the insert: the next try takes it
            return None
        holder, until = held
        if holder != self.holder and until >= now and not _died_here(holder):
            return None
        # Only if nobody took it since it was read.
        taken = session.execute(
            update(LeaseRow)
            .where(LeaseRow.agent_id == agent_id, LeaseRow.holder == holder)
            .values(holder=self.holder, expires_at=expires, cancel_requested=False)
        )
        return self._version_now(session, agent_id, version) if taken.rowcount == 1 else None

    @staticmethod
    def _version_now(session: Session, agent_id: int, read: int) -> int:
        """The agent's version once the lease is taken. On PostgreSQL each statement of a transaction reads what
        was committed before it began, so a step another process committed between the first read and the
        take is only seen by a new read; SQLite's write transaction locked out every other writer from its
        start, so what it read first stands."""
        if session.get_bind().dialect.name == "sqlite":
            return read
        return int(session.scalar(select(AgentRow.version).where(AgentRow.id == agent_id)))

    async def _renew(self, agent_id: int) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            if agent_id in self._given_back:
                return
            try:
                await self.db.write(partial(check, agent_id=agent_id, holder=self.holder, seconds=self.seconds))
            except LeaseLost:
                log.error("agent %s: lease lost to another process; this step's commits will fail", agent_id)
                return
            except Exception:  # the next renewal, or the step's own commit, tries again
                log.warning("agent %s: could not renew its lease", agent_id, exc_info=True)
