"""PostgreSQL keeps the counts of ten times as many search words in its statistics (`messages.search_vector`'s
statistics target 1000, against the default 100).

Conversation search needs each query word's count of messages, for its weight (see memory/term_stats.py). The
commonest words' counts come from the statistics ANALYZE keeps (their most common lexemes); every other word is
counted in the index, which visits the table once per message holding it. With the default target, the list
ends at words in about 0.3% of messages, so a word just below it (three thousand messages in a million) took
5-20 ms to count, most of a first search's time. With 1000, the list reaches words about ten times rarer,
whose count reads a tenth as much. The price is paid by ANALYZE (autovacuum's), which samples 300,000 rows
instead of 30,000; the new target takes effect at the next one.

SQLite counts words among its newest messages instead (term_stats), and nothing changes there.

Revision ID: 0016_term_statistics
Revises: 0015_facts
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision = "0016_term_statistics"
down_revision = "0015_facts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TARGET = 1000


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE messages ALTER COLUMN search_vector SET STATISTICS {TARGET}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages ALTER COLUMN search_vector SET STATISTICS -1")
