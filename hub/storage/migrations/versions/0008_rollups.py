"""Rollups of numeric states at 5 minutes, 1 hour and 1 day (issue 11).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "state_rollups",
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket_ts", sa.Double(), nullable=False),
        sa.Column("value_count", sa.Integer(), nullable=False),
        sa.Column("value_sum", sa.Double(), nullable=False),
        sa.Column("value_min", sa.Double(), nullable=False),
        sa.Column("value_max", sa.Double(), nullable=False),
        sa.Column("value_last", sa.Double(), nullable=False),
        sa.Column("last_ts", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["metadata_id"],
            ["states_meta.metadata_id"],
            name="fk_state_rollups_metadata_id_states_meta",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "metadata_id", "resolution", "bucket_ts", name="pk_state_rollups"
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_state_rollups_resolution_bucket_ts", "state_rollups", ["resolution", "bucket_ts"]
    )


def downgrade() -> None:
    op.drop_index("ix_state_rollups_resolution_bucket_ts", table_name="state_rollups")
    op.drop_table("state_rollups")
