"""gate_hashes (the quality gates' near-duplicate index: a perceptual hash per collection, token and stage)

Revision ID: 0006_gate_hashes
Revises: 0005_broadcasts
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_gate_hashes"
down_revision = "0005_broadcasts"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gate_hashes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("token_id", sa.BigInteger, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("image_cid", sa.Text, nullable=False),
        sa.Column("hash", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("collection", "token_id", "stage", name="uq_gate_hashes_token_stage"),
    )


def downgrade() -> None:
    op.drop_table("gate_hashes")
