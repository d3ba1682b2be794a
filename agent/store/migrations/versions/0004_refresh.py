"""refreshes: runs (block, budget, pause), items (one per token), refreshMetadata transactions, price baselines

Revision ID: 0004_refresh
Revises: 0003_review_queue
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_refresh"
down_revision = "0003_review_queue"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _job_fk(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=primary_key,
        nullable=False,
    )  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "refresh_runs",
        _job_fk(primary_key=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(100), nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("block_timestamp", sa.BigInteger, nullable=False),
        sa.Column("feed_answer", sa.String(80), nullable=True),
        sa.Column("force", sa.Boolean, nullable=False),
        sa.Column("allowance", sa.Integer, nullable=False),
        sa.Column("shared", JSON, nullable=False),
        sa.Column("paused_until", TS, nullable=True),
        sa.Column("pause_reason", sa.String(16), nullable=True),
        sa.Column("pause_detail", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "refresh_items",
        _job_fk(primary_key=True),
        sa.Column("token_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.Integer, nullable=True),
        sa.Column("parent_digest", sa.String(66), nullable=True),
        sa.Column("digest", sa.String(66), nullable=True),
        sa.Column("inputs", JSON, nullable=True),
        sa.Column("generated", JSON, nullable=True),
        sa.Column("published", JSON, nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_refresh_items_state", "refresh_items", ["job_id", "state", "token_id"])
    op.create_table(
        "refresh_txs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _job_fk(),
        sa.Column("tx_hash", sa.String(66), nullable=False, unique=True),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("gas_limit", sa.BigInteger, nullable=False),
        sa.Column("gas_used", sa.BigInteger, nullable=True),
        sa.Column("fee_wei", sa.String(80), nullable=True),
        sa.Column("provenance", sa.String(66), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submission", JSON, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("final_hash", sa.String(66), nullable=True),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("mined_at", TS, nullable=True),
    )
    op.create_index("ix_refresh_txs_job_id", "refresh_txs", ["job_id"])
    op.create_index("ix_refresh_txs_sent_at", "refresh_txs", ["sent_at"])
    op.create_table(
        "refresh_triggers",
        sa.Column("feed", sa.String(42), primary_key=True),
        sa.Column("baseline", sa.String(80), nullable=False),
        sa.Column("baseline_block", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("refresh_triggers")
    op.drop_index("ix_refresh_txs_sent_at", table_name="refresh_txs")
    op.drop_index("ix_refresh_txs_job_id", table_name="refresh_txs")
    op.drop_table("refresh_txs")
    op.drop_index("ix_refresh_items_state", table_name="refresh_items")
    op.drop_table("refresh_items")
    op.drop_table("refresh_runs")
