"""broadcasts (every signed transaction, recorded before it is sent); jobs.settle_block and jobs.waiting

Revision ID: 0005_broadcasts
Revises: 0004_refresh
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_broadcasts"
down_revision = "0004_refresh"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("chain_id", sa.BigInteger, nullable=False),
        sa.Column("sender", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("keys", sa.Text, nullable=False),
        sa.Column("submission", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("mined_hash", sa.String(66), nullable=True),
        sa.Column("settled_at", TS, nullable=True),
        sa.UniqueConstraint("tx_hash", name="uq_broadcasts_tx_hash"),
    )
    op.create_index("ix_broadcasts_sender_nonce", "broadcasts", ["sender", "nonce"])
    op.add_column("jobs", sa.Column("settle_block", sa.BigInteger, nullable=True))
    op.add_column("jobs", sa.Column("waiting", sa.Text, nullable=True))
    op.create_index("ix_jobs_settle_block", "jobs", ["settle_block"])


def downgrade() -> None:
    op.drop_index("ix_jobs_settle_block", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("waiting")
        batch.drop_column("settle_block")
    op.drop_index("ix_broadcasts_sender_nonce", table_name="broadcasts")
    op.drop_table("broadcasts")
