"""agents and agent_roles (several agents on one database: who works it, and which agent holds each singleton role)

Revision ID: 0007_agents
Revises: 0006_gate_hashes
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_agents"
down_revision = "0006_gate_hashes"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("worker_id", sa.String(128), primary_key=True),
        sa.Column("signer", sa.String(42), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("stopped_at", TS, nullable=True),
    )
    op.create_table(
        "agent_roles",
        sa.Column("role", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("lease_until", TS, nullable=False),
        sa.Column("acquired_at", TS, nullable=False),
        sa.Column("renewed_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_roles")
    op.drop_table("agents")
