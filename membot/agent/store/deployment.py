"""Which deployment this database is, for the archival store's owner names.

Milvus rows are owned by SQL ids (`agent:1`), which every membot database hands out from 1. Two databases
sharing one Milvus (staging and production, or a move from SQLite to PostgreSQL) would see each other's
passages; so the passage store prefixes every owner with this database's deployment id (made once by the
migration `0004_deployment`).

A database that held agents or sources before that migration keeps the plain names: its passages are stored
under them, and rewriting every row in Milvus (a copy of each partition on Lite, a delete and insert of each
row on a server, while other processes use them) is a long, fragile step for no gain: databases made since
are namespaced, so they never meet the plain names. Two databases that both predate the migration and
already shared a Milvus cannot be told apart from the rows; they stay as mixed as they were.
"""

from __future__ import annotations

from sqlalchemy import select

from membot.agent.store.db import Database
from membot.agent.store.schema import DeploymentRow


async def owner_namespace(db: Database) -> str:
    """The prefix of this database's owners in Milvus: its deployment id, or "" for the plain names."""
    row = (await db.rows(select(DeploymentRow.id, DeploymentRow.legacy_owners)))[0]
    deployment_id, legacy = row
    return "" if legacy else deployment_id
