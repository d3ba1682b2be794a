"""the studio's review queue: candidates awaiting a curator, and the audit trail of every decision

Revision ID: 0003_review_queue
Revises: 0002_watch_cursor
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_review_queue"
down_revision = "0002_watch_cursor"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("token_id", sa.BigInteger, nullable=True),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("candidate", JSON, nullable=False),
        sa.Column("regenerate", JSON, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("key", name="uq_review_items_key"),
    )
    op.create_index("ix_review_items_state", "review_items", ["state", "id"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "review_id", sa.Integer, sa.ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_review_events_review_id", "review_events", ["review_id"])


def downgrade() -> None:
    op.drop_index("ix_review_events_review_id", table_name="review_events")
    op.drop_table("review_events")
    op.drop_index("ix_review_items_state", table_name="review_items")
    op.drop_table("review_items")
