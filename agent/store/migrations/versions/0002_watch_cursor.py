"""the chain watcher's cursor and unfinalized block window

Revision ID: 0002_watch_cursor
Revises: 0001_jobs
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_watch_cursor"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_cursors",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("chain_id", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("finalized_number", sa.BigInteger, nullable=True),
        sa.Column("finalized_hash", sa.String(66), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "watch_blocks",
        sa.Column(
            "stream",
            sa.String(200),
            sa.ForeignKey("watch_cursors.stream", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(66), nullable=False),
        sa.Column("parent_hash", sa.String(66), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("watch_blocks")
    op.drop_table("watch_cursors")
