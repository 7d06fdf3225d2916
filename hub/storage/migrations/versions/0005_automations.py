"""Automations: persisted `for:` timers and delays, traces, and the version history of edits.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "automation_timers",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("automation_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("deadline", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_automation_timers"),
    )
    op.create_index("ix_automation_timers_automation_id", "automation_timers", ["automation_id"])
    op.create_table(
        "automation_traces",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("automation_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("trace", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_automation_traces"),
    )
    op.create_index("ix_automation_traces_automation_id_id", "automation_traces",
                    ["automation_id", "id"])
    op.create_table(
        "automation_versions",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("automation_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("by", sa.String(64), nullable=True),
        sa.Column("old_text", sa.Text(), nullable=True),
        sa.Column("new_text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_automation_versions"),
        sa.UniqueConstraint("automation_id", "version",
                            name="uq_automation_versions_automation_id_version"),
    )


def downgrade() -> None:
    op.drop_table("automation_versions")
    op.drop_index("ix_automation_traces_automation_id_id", "automation_traces")
    op.drop_table("automation_traces")
    op.drop_index("ix_automation_timers_automation_id", "automation_timers")
    op.drop_table("automation_timers")
