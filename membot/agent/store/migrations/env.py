"""Alembic's environment for membot: it runs on the connection `migrate.upgrade` passes in (inside the
transaction that holds the migration lock), never on a URL of its own."""

from __future__ import annotations

from alembic import context

from membot.agent.store.migrate import include_name, include_object
from membot.agent.store.schema import Base

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("membot's migrations run through membot.agent.store.migrate, on a live connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,  # for autogenerate only; revisions never import the models
    include_name=include_name,
    include_object=include_object,
    render_as_batch=True,  # SQLite alters most of a table only by copying it
)
with context.begin_transaction():
    context.run_migrations()
